"""Prompt sets: the built-in default (visible to every tenant) and tenants' own."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import PromptSetRow
from app.db.pagination import Page
from app.domain.ingestion import LABELS
from app.domain.prompts import PromptSet, default_prompt_set
from app.errors import InvalidInput, NotFound

DEFAULT_PROMPT_SET_ID = "ps_default"


def ensure_default(session: Session) -> PromptSetRow:
    """The built-in default row, created on first use."""
    row = session.get(PromptSetRow, DEFAULT_PROMPT_SET_ID)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = PromptSetRow(
                id=DEFAULT_PROMPT_SET_ID, tenant_id=None, name="default", spec=default_prompt_set().to_dict()
            )
            session.add(row)
    except IntegrityError:
        # Another request created it first.
        row = session.get(PromptSetRow, DEFAULT_PROMPT_SET_ID)
    return row


def get(session: Session, tenant_id: str, prompt_set_id: str) -> PromptSetRow:
    if prompt_set_id == DEFAULT_PROMPT_SET_ID:
        return ensure_default(session)
    row = repo.get_visible_prompt_set(session, tenant_id, prompt_set_id)
    if row is None:
        raise NotFound(f"prompt set '{prompt_set_id}' not found")
    return row


def list_visible(session: Session, tenant_id: str, *, limit: int, cursor: str | None) -> Page[PromptSetRow]:
    ensure_default(session)
    return repo.list_visible_prompt_sets(session, tenant_id, limit=limit, cursor=cursor)


def create(session: Session, tenant_id: str, prompt_set: PromptSet) -> PromptSetRow:
    missing = set(LABELS) - set(prompt_set.labels)
    if missing:
        raise InvalidInput(f"a prompt set needs prompts for every label; missing: {', '.join(sorted(missing))}")
    unknown = set(prompt_set.labels) - set(LABELS)
    if unknown:
        raise InvalidInput(
            f"datasets only carry the labels {', '.join(LABELS)}; unknown: {', '.join(sorted(unknown))}"
        )
    row = PromptSetRow(tenant_id=tenant_id, name=prompt_set.name, spec=prompt_set.to_dict())
    session.add(row)
    session.flush()
    return row


def load(row: PromptSetRow) -> PromptSet:
    """The domain object a stored row describes; one stored before its rules tightened is a 422."""
    try:
        return PromptSet.from_dict(row.spec)
    except ValueError as exc:
        raise InvalidInput(f"prompt set '{row.id}' is no longer valid: {exc}; create a corrected prompt set") from exc
