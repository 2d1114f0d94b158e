"""API keys: shown once, stored as an HMAC, each scoped to one tenant."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

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


def presented_hash(raw_key: str | None, pepper: str) -> str:
    """The stored form of the key a request carries; 401 when it carries none."""
    if not raw_key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    return hash_key(raw_key, pepper)


def tenant_of_hash(session: Session, key_hash: str) -> str:
    """The tenant id owning the active key stored as ``key_hash``; 401 otherwise."""
    key = repo.get_active_key(session, key_hash)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    return key.tenant_id


def authenticate(session: Session, raw_key: str | None, pepper: str) -> str:
    """The tenant id that owns ``raw_key``; 401 otherwise."""
    return tenant_of_hash(session, presented_hash(raw_key, pepper))


class KeyCache:
    """The tenants of keys verified in the last ``ttl_s`` seconds, in one process.

    A hit spares the request a database read and a thread hop (a third of a submission's cost on
    the benchmark's server). Only good keys are kept, at most ``max_entries`` (the least recently
    verified go first), so a client sending random keys cannot grow it; a key revoked in the
    database is refused by every process within ``ttl_s``. ``ttl_s`` 0 keeps nothing.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._tenants: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key_hash: str) -> str | None:
        entry = self._tenants.get(key_hash)
        if entry is None:
            return None
        tenant_id, expires = entry
        if time.monotonic() >= expires:
            self._tenants.pop(key_hash, None)
            return None
        return tenant_id

    def put(self, key_hash: str, tenant_id: str) -> None:
        if self.ttl_s <= 0:
            return
        self._tenants[key_hash] = (tenant_id, time.monotonic() + self.ttl_s)
        self._tenants.move_to_end(key_hash)
        while len(self._tenants) > self.max_entries:
            self._tenants.popitem(last=False)
