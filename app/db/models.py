"""Tables. API schemas live in app/schemas; these are storage only."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, JSONType, new_id, utcnow
from app.domain.markers import count_markers

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# OpenAI fine-tunes mirror the remote job's status, which adds these while it is active.
REMOTE_ACTIVE_STATUSES = ("validating_files", "paused")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
SAMPLE_STATUSES = ("accepted", "rejected")


def _id(prefix: str) -> Mapped[str]:
    return mapped_column(String(40), primary_key=True, default=partial(new_id, prefix))


def _tenant() -> Mapped[str]:
    return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


def _marker_default(name: str):
    """An insert default reading one marker count off the row's text."""
    def default(context) -> int:
        return _markers_of(context.get_current_parameters()["text"])[name]
    return default


@lru_cache(maxsize=16)
def _markers_of(text: str) -> dict[str, int]:
    # The three marker columns of a row are filled one after another from the same text.
    return count_markers(text)


class RunState:
    """The lifecycle columns every queued task's row has (fine-tune jobs, generations, reports)."""

    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # The worker run that holds the row while it is running (node, process, run token): a second
    # delivery of the same task sees a fresh heartbeat of another owner and leaves the row alone.
    owner: Mapped[str | None] = mapped_column(String(200), default=None)
    # When the row's task was last sent to the queue (the reaper re-sends what waits too long).
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = _id("tn")
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = _id("key")
    tenant_id: Mapped[str] = _tenant()
    name: Mapped[str] = mapped_column(String(200), default="default")
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = _id("ds")
    tenant_id: Mapped[str] = _tenant()
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(300))
    column_mapping: Mapped[dict[str, Any]] = mapped_column(JSONType)
    split_seed: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSONType)
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created()


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (Index("ix_records_dataset_split", "dataset_id", "split"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(Integer)
    participant_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(40))
    split: Mapped[str] = mapped_column(String(20))


class PromptSetRow(Base):
    __tablename__ = "prompt_sets"
    id: Mapped[str] = _id("ps")
    # NULL tenant = the built-in default every tenant sees.
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=True
    )
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()


class FinetuneJob(RunState, Base):
    __tablename__ = "finetune_jobs"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)
    id: Mapped[str] = _id("ftjob")
    tenant_id: Mapped[str] = _tenant()
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    prompt_set_id: Mapped[str] = mapped_column(ForeignKey("prompt_sets.id"))
    base_model: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(20))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    eta_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # An openai job's remote state: job and file ids, the remote status, trained tokens, error,
    # the last mirrored event, the pre-flight summary, a requested pause or resume.
    remote: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    adapter: Mapped["Adapter | None"] = relationship(
        primaryjoin="and_(FinetuneJob.id == Adapter.job_id, Adapter.checkpoint_id.is_(None))",
        viewonly=True, uselist=False, lazy="selectin",
    )

    @property
    def adapter_id(self) -> str | None:
        return self.adapter.id if self.adapter is not None else None


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("finetune_jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = _created()


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)
    id: Mapped[str] = _id("ckpt")
    job_id: Mapped[str] = mapped_column(ForeignKey("finetune_jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float, default=None)
    # A directory (PEFT) or, for an openai job, the checkpoint's model id.
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    created_at: Mapped[datetime] = _created()

    @property
    def remote_model(self) -> str | None:
        """An openai checkpoint's model id; None for a PEFT directory, whose path stays on the server."""
        return None if self.path.startswith("/") else self.path


class Adapter(Base):
    """What a generation samples from: a PEFT directory (kind peft) or an OpenAI fine-tuned model id
    (kind openai). A job has one final adapter; an openai job also one per checkpoint model."""

    __tablename__ = "adapters"
    id: Mapped[str] = _id("ad")
    tenant_id: Mapped[str] = _tenant()
    job_id: Mapped[str] = mapped_column(ForeignKey("finetune_jobs.id"), index=True)
    checkpoint_id: Mapped[str | None] = mapped_column(ForeignKey("checkpoints.id"), unique=True, default=None)
    prompt_set_id: Mapped[str] = mapped_column(ForeignKey("prompt_sets.id"))
    base_model: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20), default="peft", server_default="peft")
    path: Mapped[str | None] = mapped_column(Text, default=None)
    remote_model: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[datetime] = _created()


class Corpus(Base):
    __tablename__ = "corpora"
    id: Mapped[str] = _id("corp")
    tenant_id: Mapped[str] = _tenant()
    # The real data set whose train split every adapter of this corpus learned from.
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), default=None)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class CorpusTally(Base):
    """Per corpus, label, status and reject reason ('' for none): how many samples, and the sums of
    their marker counts. Kept by triggers on samples (migration 0007), never written by the app, so
    every insert (the workers', a bulk load) counts; GET /corpora/{id} reads these rows, not the samples."""

    __tablename__ = "corpus_tallies"
    corpus_id: Mapped[str] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    words: Mapped[int] = mapped_column(BigInteger)
    fillers: Mapped[int] = mapped_column(BigInteger)
    repetitions: Mapped[int] = mapped_column(BigInteger)


class CorpusReport(RunState, Base):
    """The evidence computed for a corpus: one row per corpus, recomputed in place on request."""

    __tablename__ = "corpus_reports"
    id: Mapped[str] = _id("rep")
    tenant_id: Mapped[str] = _tenant()
    corpus_id: Mapped[str] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"), unique=True)
    # Accepted samples the stored report covers: another count in the corpus now means it is stale.
    samples: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)


class Generation(RunState, Base):
    __tablename__ = "generations"
    id: Mapped[str] = _id("gen")
    tenant_id: Mapped[str] = _tenant()
    adapter_id: Mapped[str] = mapped_column(ForeignKey("adapters.id"))
    corpus_id: Mapped[str] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"))
    # The one label asked for; null when the generation asked for several (see counts).
    label: Mapped[str | None] = mapped_column(String(40), default=None)
    counts: Mapped[dict[str, int]] = mapped_column(JSONType)
    n: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    sampler: Mapped[str] = mapped_column(String(20), default="hf")
    batch_size: Mapped[int | None] = mapped_column(Integer, default=None)
    # Fixed at the first run, so a resumed generation draws the same chunks as an uninterrupted one.
    chunk_size: Mapped[int | None] = mapped_column(Integer, default=None)
    done: Mapped[int] = mapped_column(Integer, default=0)
    candidates: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    rejected: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    budget_exhausted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Remote samplers' usage: prompt and completion tokens, system fingerprints seen.
    usage: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Sample(Base):
    """Every drawn candidate: accepted ones make the corpus, rejected ones say why they were not kept."""

    __tablename__ = "samples"
    # One row per (generation, label, index): re-running a generation cannot duplicate samples.
    __table_args__ = (
        UniqueConstraint("generation_id", "label", "index"),
        Index("ix_samples_corpus_status_label_id", "corpus_id", "status", "label", "id"),
        Index("ix_samples_corpus_status_id", "corpus_id", "status", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    corpus_id: Mapped[str] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"))
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="accepted")
    reject_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    finish_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    checks: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()
    # Marker counts of the text, computed on insert: a corpus's quality is their per-label sums,
    # so it is read without loading a single text.
    marker_words: Mapped[int | None] = mapped_column(Integer, default=_marker_default("words"))
    marker_fillers: Mapped[int | None] = mapped_column(Integer, default=_marker_default("fillers"))
    marker_repetitions: Mapped[int | None] = mapped_column(Integer, default=_marker_default("repetitions"))
