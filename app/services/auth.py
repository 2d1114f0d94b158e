"""API keys: shown once, stored as an HMAC, each scoped to one tenant."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import ApiKey, Tenant
from app.errors import Unauthorized

KEY_PREFIX = "sk_syn_"


def hash_key(raw_key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def create_key(session: Session, tenant_name: str, pepper: str, key_name: str = "default") -> tuple[Tenant, str]:
    """A new key for the tenant (created if missing); the raw key is returned once, never stored."""
    tenant = repo.get_tenant_by_name(session, tenant_name)
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, name=key_name, prefix=raw[:12], key_hash=hash_key(raw, pepper)))
    session.flush()
    return tenant, raw


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The raw key a request carries: ``Authorization: Bearer <key>``, else ``X-API-Key``."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def authenticate(session: Session, raw_key: str | None, pepper: str) -> str:
    """The tenant id that owns ``raw_key``; 401 otherwise."""
    if not raw_key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    key = repo.get_active_key(session, hash_key(raw_key, pepper))
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    return key.tenant_id
