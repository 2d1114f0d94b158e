"""Queries. Every tenant-owned lookup filters by tenant; services hold the rules."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from sqlalchemy import Text, case, cast, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.db.models import (
    Adapter,
    ApiKey,
    Checkpoint,
    CorpusTally,
    FinetuneJob,
    Generation,
    JobEvent,
    PromptSetRow,
    Record,
    Sample,
    Tenant,
)
from app.db.pagination import Page, paginate
from app.domain.markers import count_markers


def get_owned(session: Session, model: type, tenant_id: str, object_id: str) -> Any | None:
    """A tenant's object by id, or None (another tenant's object is simply not found)."""
    return session.scalar(select(model).where(model.id == object_id, model.tenant_id == tenant_id))


def list_owned(
    session: Session, model: type, tenant_id: str, *, limit: int, cursor: str | None, **filters: Any
) -> Page[Any]:
    """Newest first, filtered by tenant and by any ``column=value`` given."""
    stmt = select(model).where(model.tenant_id == tenant_id)
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(getattr(model, column) == value)
    return paginate(session, stmt, model.id, limit=limit, cursor=cursor, newest_first=True)


def adapter_with_origin(session: Session, tenant_id: str, adapter_id: str) -> tuple[Adapter, str, Any] | None:
    """A tenant's adapter, the data set its job trained on and its prompt set row (None if that row is
    missing), in one round trip: what a generation request needs to know of its adapter."""
    row = session.execute(
        select(Adapter, FinetuneJob.dataset_id, PromptSetRow)
        .join(FinetuneJob, FinetuneJob.id == Adapter.job_id)
        .outerjoin(PromptSetRow, PromptSetRow.id == Adapter.prompt_set_id)
        .where(Adapter.id == adapter_id, Adapter.tenant_id == tenant_id)
    ).one_or_none()
    return None if row is None else tuple(row)


# tenants and keys

def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def get_active_key(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


def count_keys(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey)) or 0


# datasets

def add_records(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    session.execute(Record.__table__.insert(), list(rows))


def list_records(
    session: Session, dataset_id: str, *, limit: int, cursor: str | None, split: str | None, label: str | None
) -> Page[Record]:
    stmt = select(Record).where(Record.dataset_id == dataset_id)
    if split:
        stmt = stmt.where(Record.split == split)
    if label:
        stmt = stmt.where(Record.label == label)
    return paginate(session, stmt, Record.id, limit=limit, cursor=cursor, newest_first=False)


def labels_in_split(session: Session, dataset_id: str, split: str) -> set[str]:
    stmt = select(Record.label).where(Record.dataset_id == dataset_id, Record.split == split).distinct()
    return set(session.scalars(stmt))


def records_for_split(session: Session, dataset_id: str, split: str) -> Sequence[Record]:
    stmt = select(Record).where(Record.dataset_id == dataset_id, Record.split == split).order_by(Record.id)
    return session.scalars(stmt).all()


# prompt sets

def get_visible_prompt_set(session: Session, tenant_id: str, prompt_set_id: str) -> PromptSetRow | None:
    return session.scalar(
        select(PromptSetRow).where(
            PromptSetRow.id == prompt_set_id,
            or_(PromptSetRow.tenant_id == tenant_id, PromptSetRow.tenant_id.is_(None)),
        )
    )


def list_visible_prompt_sets(session: Session, tenant_id: str, *, limit: int, cursor: str | None) -> Page[PromptSetRow]:
    stmt = select(PromptSetRow).where(or_(PromptSetRow.tenant_id == tenant_id, PromptSetRow.tenant_id.is_(None)))
    return paginate(session, stmt, PromptSetRow.id, limit=limit, cursor=cursor, newest_first=False)


# fine-tune jobs

def get_job_by_idempotency_key(session: Session, tenant_id: str, key: str) -> FinetuneJob | None:
    return session.scalar(
        select(FinetuneJob).where(FinetuneJob.tenant_id == tenant_id, FinetuneJob.idempotency_key == key)
    )


def lock_job(session: Session, job_id: str) -> FinetuneJob | None:
    """The job row, locked for update where the database supports it."""
    return session.scalar(select(FinetuneJob).where(FinetuneJob.id == job_id).with_for_update())


def events_after(session: Session, job_id: str, after_id: int, limit: int) -> Sequence[JobEvent]:
    stmt = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return session.scalars(stmt).all()


def list_checkpoints(session: Session, job_id: str) -> Sequence[Checkpoint]:
    return session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)).all()


def page_checkpoints(session: Session, job_id: str, *, limit: int, cursor: str | None) -> Page[Checkpoint]:
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return paginate(session, stmt, Checkpoint.step, limit=limit, cursor=cursor, newest_first=False)


def get_checkpoint(session: Session, job_id: str, step: int) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))


def get_adapter_for_job(session: Session, job_id: str) -> Adapter | None:
    """The job's final adapter (an openai job's checkpoint adapters are not it)."""
    return session.scalar(select(Adapter).where(Adapter.job_id == job_id, Adapter.checkpoint_id.is_(None)))


def get_adapter_for_checkpoint(session: Session, checkpoint_id: str) -> Adapter | None:
    return session.scalar(select(Adapter).where(Adapter.checkpoint_id == checkpoint_id))


def unfinished(session: Session, model: type) -> Sequence[Any]:
    """Rows not finished yet (for recovery after a crash)."""
    return session.scalars(
        select(model).where(model.status.not_in(("succeeded", "failed", "cancelled"))).order_by(model.id)
    ).all()


# corpora and samples

ACCEPTED = "accepted"


class CorpusTallies:
    """A corpus's tally rows (see CorpusTally), read once, in the shapes the API shows."""

    def __init__(self, rows: Sequence[CorpusTally]) -> None:
        self.rows = rows

    def label_counts(self) -> dict[str, int]:
        """Accepted samples per label."""
        counts: dict[str, int] = {}
        for row in self.rows:
            if row.status == ACCEPTED:
                counts[row.label] = counts.get(row.label, 0) + row.n
        return counts

    def reject_counts(self) -> dict[str, dict[str | None, int]]:
        """Rejected candidates per label and reason."""
        counts: dict[str, dict[str | None, int]] = {}
        for row in self.rows:
            if row.status != ACCEPTED:
                reasons = counts.setdefault(row.label, {})
                reason = row.reason or None
                reasons[reason] = reasons.get(reason, 0) + row.n
        return counts

    def marker_sums(self) -> dict[str, tuple[int, int, int, int]]:
        """Per label of the accepted samples: (count, words, fillers, repetitions)."""
        return {row.label: (row.n, row.words, row.fillers, row.repetitions)
                for row in self.rows if row.status == ACCEPTED}


def corpus_tallies(session: Session, corpus_id: str) -> CorpusTallies:
    """The corpus's tallies: a few rows, whatever the number of samples."""
    rows = session.scalars(
        select(CorpusTally).where(CorpusTally.corpus_id == corpus_id, CorpusTally.n > 0)
        .order_by(CorpusTally.label, CorpusTally.status, CorpusTally.reason)
    ).all()
    return CorpusTallies(rows)


def list_samples(
    session: Session, corpus_id: str, *, limit: int, cursor: str | None, label: str | None, status: str | None = ACCEPTED
) -> Page[Sample]:
    """A page of a corpus's samples; status None lists accepted and rejected alike."""
    stmt = select(Sample).where(Sample.corpus_id == corpus_id)
    if status:
        stmt = stmt.where(Sample.status == status)
    if label:
        stmt = stmt.where(Sample.label == label)
    return paginate(session, stmt, Sample.id, limit=limit, cursor=cursor, newest_first=False)


def export_samples(
    session: Session, corpus_id: str, *, label: str | None, after: int | None, limit: int
) -> Sequence[Any]:
    """Up to ``limit`` accepted samples after id ``after``, in id order, as tuples (id, label, text,
    generation_id, index, finish_reason, provenance as its JSON text, for the caller to parse fast)."""
    columns = (Sample.id, Sample.label, Sample.text, Sample.generation_id, Sample.index, Sample.finish_reason,
               cast(Sample.provenance, Text))
    return _accepted_chunk(session, columns, corpus_id, label, after, limit)


def _accepted_chunk(
    session: Session, columns: Sequence[Any], corpus_id: str, label: str | None, after: int | None, limit: int
) -> Sequence[Any]:
    stmt = select(*columns).where(Sample.corpus_id == corpus_id, Sample.status == ACCEPTED)
    if label:
        stmt = stmt.where(Sample.label == label)
    if after is not None:
        stmt = stmt.where(Sample.id > after)
    # On the connection: plain Core rows, without the ORM's per-row loading.
    return session.connection().execute(stmt.order_by(Sample.id).limit(limit)).all()


# An export row of a sample (app.services.corpora._synthetic_row), written by Postgres as JSON text.
_SAMPLE_EXPORT_LINE = literal_column(
    """json_build_object(
        'id', samples.id, 'synthetic', true, 'label', samples.label, 'text', samples.text,
        'participant_id', null, 'record_id', null, 'generation_id', samples.generation_id,
        'index', samples.index, 'finish_reason', samples.finish_reason,
        'adapter_id', samples.provenance -> 'adapter_id', 'base_model', samples.provenance -> 'base_model',
        'sampler', coalesce(samples.provenance -> 'sampler', '"hf"'::jsonb),
        'seed', samples.provenance -> 'seed', 'sample_seed', samples.provenance -> 'sample_seed',
        'params', coalesce(samples.provenance -> 'params', '{}'::jsonb), 'provenance', samples.provenance
    )::text""",
    Text,
)


def export_sample_lines(
    session: Session, corpus_id: str, *, label: str | None, after: int | None, limit: int
) -> Sequence[Any]:
    """Postgres only: as export_samples, but (id, the sample's export row as JSON text)."""
    return _accepted_chunk(session, (Sample.id, _SAMPLE_EXPORT_LINE), corpus_id, label, after, limit)


def accepted_samples(session: Session, corpus_id: str) -> Sequence[Any]:
    """(generation_id, label, index, text) of every accepted sample of a corpus, in id order."""
    stmt = (
        select(Sample.generation_id, Sample.label, Sample.index, Sample.text)
        .where(Sample.corpus_id == corpus_id, Sample.status == ACCEPTED)
        .order_by(Sample.id)
    )
    return session.execute(stmt).all()


def generation_tallies(session: Session, generation_id: str) -> dict[str, tuple[int, int, int]]:
    """Per label: accepted count, rejected count, and the next candidate index to draw."""
    accepted = func.sum(case((Sample.status == ACCEPTED, 1), else_=0))
    stmt = (
        select(Sample.label, accepted, func.count(), func.max(Sample.index))
        .where(Sample.generation_id == generation_id)
        .group_by(Sample.label)
    )
    return {label: (int(ok or 0), total - int(ok or 0), top + 1) for label, ok, total, top in session.execute(stmt)}


def generation_reject_counts(session: Session, generation_id: str) -> dict[str, int]:
    """Rejected candidates of a generation by reason."""
    stmt = (
        select(Sample.reject_reason, func.count())
        .where(Sample.generation_id == generation_id, Sample.status != ACCEPTED)
        .group_by(Sample.reject_reason)
    )
    return {reason: count for reason, count in session.execute(stmt)}


def insert_samples(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert sample rows, skipping any whose (generation, label, index) is stored already; returns how
    many were new. ON CONFLICT DO NOTHING, so two workers racing on one chunk cannot fail or duplicate."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[dialect]
    # A multi-row VALUES insert cannot run the columns' per-row defaults, so the markers are given.
    rows = [{**{f"marker_{name}": count for name, count in count_markers(row["text"]).items()}, **row} for row in rows]
    stmt = insert(Sample).values(rows).on_conflict_do_nothing(
        index_elements=[Sample.generation_id, Sample.label, Sample.index]
    ).returning(Sample.id)
    return len(session.execute(stmt).all())


def drawn_samples(session: Session, corpus_id: str) -> Sequence[Any]:
    """(id, label, text, status, finish_reason, reject_reason) of every candidate drawn into a corpus, in id order."""
    stmt = (
        select(Sample.id, Sample.label, Sample.text, Sample.status, Sample.finish_reason, Sample.reject_reason)
        .where(Sample.corpus_id == corpus_id)
        .order_by(Sample.id)
    )
    return session.execute(stmt).all()


def corpus_generations(session: Session, corpus_id: str) -> Sequence[Generation]:
    return session.scalars(select(Generation).where(Generation.corpus_id == corpus_id).order_by(Generation.id)).all()


def events_of_kind(session: Session, job_id: str, kind: str) -> Sequence[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind).order_by(JobEvent.id)
    return session.scalars(stmt).all()
