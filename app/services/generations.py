"""Generation requests: which adapter, which label, which sampling parameters, which corpus."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import Corpus, Generation
from app.db.session import enqueue_after_commit
from app.errors import InvalidInput, NotFound
from app.services import adapters, corpora, prompt_sets

TASK_NAME = "generation.run"


def create(
    session: Session,
    tenant_id: str,
    *,
    adapter_id: str,
    label: str,
    n: int,
    params: dict[str, Any],
    corpus_id: str | None,
) -> Generation:
    """A queued generation appending to ``corpus_id`` (or to a new corpus)."""
    adapter = adapters.get(session, tenant_id, adapter_id)
    prompt_set = prompt_sets.load(prompt_sets.get(session, tenant_id, adapter.prompt_set_id))
    if label not in prompt_set.labels:
        known = ", ".join(sorted(prompt_set.labels))
        raise InvalidInput(f"label '{label}' is not one the adapter was trained on (known: {known})")
    if corpus_id is None:
        corpus = Corpus(tenant_id=tenant_id, name=f"synthetic from {adapter.id}")
        session.add(corpus)
        session.flush()
    else:
        corpus = corpora.get(session, tenant_id, corpus_id)
    generation = Generation(
        tenant_id=tenant_id,
        adapter_id=adapter.id,
        corpus_id=corpus.id,
        label=label,
        n=n,
        params=params,
    )
    session.add(generation)
    session.flush()
    enqueue_after_commit(session, TASK_NAME, generation.id)
    return generation


def get(session: Session, tenant_id: str, generation_id: str) -> Generation:
    generation = repo.get_owned(session, Generation, tenant_id, generation_id)
    if generation is None:
        raise NotFound(f"generation '{generation_id}' not found")
    return generation
