"""Fine-tune jobs: creation rules, idempotency, cancel, events and checkpoints."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, Checkpoint, FinetuneJob, JobEvent
from app.db.pagination import Page
from app.db.session import enqueue_after_commit, revoke_after_commit
from app.domain.base_models import UnknownBaseModel, resolve_base_model
from app.domain.hyperparameters import Hyperparameters
from app.domain.openai_finetune import ExampleTokens, OpenAIHyperparameters, PreflightReport, preflight
from app.domain.splits import SPLITS, SplitRecord, find_leaks
from app.errors import Conflict, InvalidInput, JobStateError, NotFound, UnknownModel
from app.services import datasets, prompt_sets
from app.services.token_counts import ModelTokenizer

TASK_NAME = "finetune.run"
OPENAI_TASK_NAME = "openai_finetune.run"  # drives a remote job: light work, on the default queue
METHODS = ("qlora", "lora", "openai")


def _check_batch_tokens(hp: Hyperparameters, limit: int | None) -> None:
    """Activations grow with batch_size x max_seq_length: refuse a product over the server's limit."""
    tokens = hp.batch_size * hp.max_seq_length
    if limit is not None and tokens > limit:
        raise InvalidInput(
            f"batch_size x max_seq_length is {hp.batch_size} x {hp.max_seq_length} = {tokens}, above this server's "
            f"limit of {limit} (SYNTHAUG_MAX_TRAIN_BATCH_TOKENS); lower batch_size and raise "
            "gradient_accumulation_steps for the same effective batch",
            extra={"parameter": "batch_size x max_seq_length", "value": tokens, "limit": limit},
        )


def task_name_of(job: FinetuneJob) -> str:
    """The task that runs a job: local training, or driving an OpenAI fine-tune."""
    return OPENAI_TASK_NAME if job.method == "openai" else TASK_NAME


def create(
    session: Session,
    tenant_id: str,
    *,
    dataset_id: str,
    base_model: str,
    method: str,
    prompt_set_id: str,
    seed: int,
    hyperparameters: Hyperparameters | OpenAIHyperparameters,
    idempotency_key: str | None,
    tokenizer_of: Callable[[str], ModelTokenizer | None] = lambda _base_model: None,
    openai_models: Collection[str] = (),
    openai_counter_of: Callable[[str], Callable[[dict], ExampleTokens]] | None = None,
    max_batch_tokens: int | None = None,
    model_roots: Sequence[Path] = (),
) -> tuple[FinetuneJob, bool]:
    """A queued job (enqueued after commit); with a known Idempotency-Key, the existing job.

    When ``tokenizer_of`` finds the base model's tokenizer, examples longer than max_seq_length are
    refused here (unless truncation is allowed); without it, the worker checks before training.
    """
    requested = (dataset_id, base_model, method, prompt_set_id, seed, hyperparameters.model_dump())
    if idempotency_key:
        existing = repo.get_job_by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, requested, idempotency_key), False
    if method not in METHODS:
        raise InvalidInput(f"method '{method}' is not supported here; use one of: {', '.join(METHODS)}")
    if method == "openai":
        if base_model not in openai_models:
            raise UnknownModel(f"'{base_model}' is not an OpenAI model this server fine-tunes (allowed: "
                               f"{', '.join(openai_models) or 'none; set SYNTHAUG_OPENAI_MODELS'})")
    else:
        try:
            resolve_base_model(base_model, model_roots)
        except UnknownBaseModel as exc:
            raise UnknownModel(str(exc)) from exc
        _check_batch_tokens(hyperparameters, max_batch_tokens)
    dataset = datasets.get(session, tenant_id, dataset_id)
    prompt_set = prompt_sets.load(prompt_sets.get(session, tenant_id, prompt_set_id))
    _check_labels(session, dataset.id, set(prompt_set.labels))
    # Built even without a tokenizer: it refuses a data set whose held-out speakers reach train.
    train, validation = training_examples(session, tenant_id, dataset.id, prompt_set_id, seed)
    preflight_report = None
    if method == "openai":
        preflight_report = _preflight_openai(train, validation, base_model, hyperparameters, openai_counter_of)
    else:
        tokenizer = tokenizer_of(base_model)
        if tokenizer is not None:
            check = measure_lengths(tokenizer.example_length, train + validation, hyperparameters.max_seq_length)
            if check.too_long and not hyperparameters.allow_truncation:
                raise InvalidInput(check.refusal(), extra={"too_long": check.too_long, "needed": check.longest})
    job = FinetuneJob(
        tenant_id=tenant_id,
        dataset_id=dataset.id,
        prompt_set_id=prompt_set_id,
        base_model=base_model,
        method=method,
        hyperparameters=hyperparameters.model_dump(),
        seed=seed,
        idempotency_key=idempotency_key,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first.
        existing = repo.get_job_by_idempotency_key(session, tenant_id, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, requested, idempotency_key or ""), False
    add_event(session, job.id, "message", "job queued")
    if preflight_report is not None:
        summary = preflight_report.to_dict()
        job.remote = {"preflight": summary}
        add_event(session, job.id, "message",
                  f"pre-flight: {preflight_report.train.examples} train and {preflight_report.validation.examples} "
                  f"validation examples, about {preflight_report.billed_tokens_estimate} billed tokens over "
                  f"{preflight_report.n_epochs} epochs", {"preflight": summary})
        for warning in preflight_report.warnings:
            add_event(session, job.id, "warning", warning.message, warning.to_dict())
    enqueue_after_commit(session, task_name_of(job), job.id)
    return job, True


def _preflight_openai(train, validation, base_model: str, hp: OpenAIHyperparameters,
                      counter_of: Callable[[str], Callable[[dict], ExampleTokens]] | None) -> PreflightReport:
    """OpenAI's data rules on the JSONL about to be uploaded; an error is a 422 naming the example."""
    if counter_of is None:
        raise InvalidInput("openai fine-tunes are not configured on this server")
    report = preflight([{"messages": m} for m in train], [{"messages": m} for m in validation],
                       model=base_model, n_epochs=hp.n_epochs, count=counter_of(base_model))
    if not report.ok:
        raise InvalidInput(report.refusal(), extra={"preflight": report.to_dict()})
    return report


def _replay(existing: FinetuneJob, requested: tuple, key: str) -> FinetuneJob:
    """The job an Idempotency-Key already created, if the request is the same."""
    stored = (existing.dataset_id, existing.base_model, existing.method, existing.prompt_set_id,
              existing.seed, existing.hyperparameters)
    if requested != stored:
        raise Conflict(f"Idempotency-Key '{key}' was already used for a different job ({existing.id})")
    return existing


def _check_labels(session: Session, dataset_id: str, prompt_labels: set[str]) -> None:
    train_labels = repo.labels_in_split(session, dataset_id, "train")
    if not train_labels:
        raise InvalidInput(f"dataset '{dataset_id}' has no train records to fine-tune on")
    unknown = train_labels - prompt_labels
    if unknown:
        raise InvalidInput(f"the prompt set has no prompts for label(s): {', '.join(sorted(unknown))}")


def get(session: Session, tenant_id: str, job_id: str) -> FinetuneJob:
    job = repo.get_owned(session, FinetuneJob, tenant_id, job_id)
    if job is None:
        raise NotFound(f"fine-tune job '{job_id}' not found")
    return job


def list_for(
    session: Session, tenant_id: str, *, limit: int, cursor: str | None, status: str | None
) -> Page[FinetuneJob]:
    return repo.list_owned(session, FinetuneJob, tenant_id, limit=limit, cursor=cursor, status=status)


def cancel(session: Session, tenant_id: str, job_id: str) -> FinetuneJob:
    """Queued jobs cancel at once; running ones stop at the trainer's next step."""
    get(session, tenant_id, job_id)
    job = repo.lock_job(session, job_id)
    if job.status in TERMINAL_STATUSES:
        raise JobStateError(f"job '{job_id}' is already {job.status} and cannot be cancelled")
    job.cancel_requested = True
    if job.status == "queued" and job.owner is None:  # no worker holds it (an openai job's remote queue does)
        job.status, job.finished_at = "cancelled", utcnow()
        add_event(session, job.id, "message", "cancelled before it started")
        revoke_after_commit(session, task_name_of(job), job.id)
    else:
        add_event(session, job.id, "message", "cancel requested; stopping after the current step")
    session.flush()
    return job


def request_pause(session: Session, tenant_id: str, job_id: str, paused: bool) -> FinetuneJob:
    """Pause or resume an openai job: its driver asks OpenAI at its next poll."""
    get(session, tenant_id, job_id)
    job = repo.lock_job(session, job_id)
    action = "paused" if paused else "resumed"
    if job.method != "openai":
        raise JobStateError(f"job '{job_id}' is a {job.method} job; only openai jobs can be {action}")
    if job.status in TERMINAL_STATUSES or job.cancel_requested:
        raise JobStateError(f"job '{job_id}' is {job.status if job.status in TERMINAL_STATUSES else 'being cancelled'}"
                            f" and cannot be {action}")
    if not job.remote.get("job_id"):
        raise JobStateError(f"job '{job_id}' has no OpenAI job yet (it is {job.status}); try again once it runs")
    job.remote = {**job.remote, "desired": "paused" if paused else "running"}
    add_event(session, job.id, "message", f"{'pause' if paused else 'resume'} requested")
    session.flush()
    return job


def add_event(session: Session, job_id: str, kind: str, message: str = "", data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, kind=kind, message=message, data=data or {})
    session.add(event)
    session.flush()
    return event


def events(session: Session, tenant_id: str, job_id: str, *, after: int, limit: int) -> Sequence[JobEvent]:
    get(session, tenant_id, job_id)
    return repo.events_after(session, job_id, after, limit)


def checkpoints(
    session: Session, tenant_id: str, job_id: str, *, limit: int, cursor: str | None
) -> Page[Checkpoint]:
    get(session, tenant_id, job_id)
    return repo.page_checkpoints(session, job_id, limit=limit, cursor=cursor)


def training_examples(
    session: Session, tenant_id: str, dataset_id: str, prompt_set_id: str, seed: int
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Chat examples of the train and validation splits, role variations drawn from a seeded RNG.

    Only the train split ever reaches a trainer's gradient; validation examples measure its loss.
    """
    prompt_set = prompt_sets.load(prompt_sets.get(session, tenant_id, prompt_set_id))
    train, validation, test = (repo.records_for_split(session, dataset_id, split) for split in SPLITS)
    check_training_records(train, validation, test)
    rng = random.Random(seed)
    return (
        [prompt_set.training_messages(r.label, r.text, rng) for r in train],
        [prompt_set.training_messages(r.label, r.text, rng) for r in validation],
    )


def check_training_records(
    train: Sequence[SplitRecord], validation: Sequence[SplitRecord], test: Sequence[SplitRecord]
) -> None:
    """Refuse (InvalidInput) to hand a trainer anything but train records for its gradient and validation
    records for its eval loss, or train records whose speaker or transcript is also held out.

    The second catches data sets stored before uploads compared participant ids and transcripts the
    way ``find_leaks`` does ('P01' in train, 'p01' in test).
    """
    for split, records in (("train", train), ("validation", validation)):
        stray = next((r for r in records if r.split != split), None)
        if stray is not None:
            raise InvalidInput(
                f"refusing to train: a '{stray.split}' record (line {stray.row}, participant {stray.participant_id}) "
                f"was selected as a {split} example; the trainer only receives train records to learn from and "
                "validation records to measure, never test records"
            )
    leaks = find_leaks(train, [*validation, *test])
    if leaks:
        raise InvalidInput(
            f"refusing to train on this data set: {leaks[0].message}. It was stored before uploads were checked "
            f"for this ({len(leaks)} problem(s)); upload a corrected file",
            extra={"errors": [issue.to_dict() for issue in leaks]},
        )


@dataclass(frozen=True)
class LengthCheck:
    """How many examples exceed max_seq_length, and the length the longest needs."""

    examples: int
    too_long: int
    longest: int
    max_seq_length: int

    def refusal(self) -> str:
        return (
            f"{self.too_long} of {self.examples} train/validation examples are longer than max_seq_length "
            f"{self.max_seq_length} tokens (prompt + transcript + end token); the longest needs {self.longest}. "
            f"Set max_seq_length to at least {self.longest}, or set allow_truncation to train on cut examples "
            "(a cut example loses its end token, and the model learns not to stop)."
        )

    def warning(self) -> str:
        return (
            f"{self.too_long} of {self.examples} train/validation examples are cut at max_seq_length "
            f"{self.max_seq_length} (allow_truncation); the longest needs {self.longest} tokens"
        )


def measure_lengths(
    length_of: Callable[[list[dict[str, str]]], int], examples: Sequence[list[dict[str, str]]], max_seq_length: int
) -> LengthCheck:
    lengths = [length_of(messages) for messages in examples]
    too_long = sum(length > max_seq_length for length in lengths)
    return LengthCheck(len(lengths), too_long, max(lengths, default=0), max_seq_length)
