"""Drives an OpenAI fine-tune and mirrors it into our tables (the `openai_finetune.run` task).

Upload the train (and validation) split as chat JSONL, create the remote job once, then poll with
backoff: status, every event, every checkpoint, trained tokens, the ETA and the error are copied
into the job, its events and its checkpoints. Our cancel cancels theirs; a requested pause or resume
is passed on. A restart resumes polling from the stored remote id; if a worker died between
creating the remote job and storing its id, the job is found again by its metadata, never created twice.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.base import utcnow
from app.db.models import Adapter, Checkpoint, FinetuneJob
from app.domain.openai_finetune import JOB_ID_METADATA_KEY, OpenAIHyperparameters, to_jsonl
from app.logs import job_context
from app.server_paths import hide_server_paths
from app.services import finetune_jobs
from worker.context import WorkerContext
from worker.lifecycle import Heartbeat, claim, heartbeat, owns

log = logging.getLogger(__name__)

REMOTE_TERMINAL = {"succeeded", "failed", "cancelled"}


def _transient_errors() -> tuple[type[Exception], ...]:
    import openai

    return (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError, openai.APITimeoutError)


class _Lost(Exception):
    """The job is no longer this worker's (taken over or re-queued)."""


def run_openai_finetune(ctx: WorkerContext, job_id: str) -> None:
    """Create (once) and follow the job's OpenAI fine-tune until it ends."""
    owner = ctx.new_owner()
    with ctx.db.transaction() as s:
        job = repo.lock_job(s, job_id)
        if not claim(job, ctx.settings.max_attempts, owner, ctx.settings.stale_after_s):
            return
        attempt, remote_id = job.attempts, job.remote.get("job_id")
        finetune_jobs.add_event(s, job_id, "message", f"attempt {attempt}" + (
            f", following OpenAI job {remote_id}" if remote_id else ""), {"attempt": attempt, "owner": owner})
    with job_context(attempt=attempt), heartbeat(ctx.db, FinetuneJob, job_id, owner,
                                                 ctx.settings.heartbeat_interval_s) as beat:
        try:
            client = ctx.openai_client()
            remote_id = _ensure_remote_job(ctx, client, job_id, owner)
            _follow(ctx, client, job_id, remote_id, owner, beat)
        except _Lost:
            log.warning("openai job %s was taken from this worker; it stops following it", job_id)
        except Exception as exc:
            log.exception("openai fine-tune %s failed", job_id)
            _finish(ctx, job_id, owner, "failed", hide_server_paths(_describe(exc), ctx.settings))


def _describe(exc: Exception) -> str:
    """An OpenAI error as a person can act on it (status, type, message), never the key."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"OpenAI answered {exc.status_code} ({type(exc).__name__}): {exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        return f"OpenAI could not be reached ({type(exc).__name__}): {exc}"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _update(ctx: WorkerContext, job_id: str, owner: str) -> Iterator[tuple[Session, FinetuneJob]]:
    """A transaction on the locked job, refused (_Lost) when the job is no longer ours."""
    with ctx.db.transaction() as s:
        job = repo.lock_job(s, job_id)
        if not owns(job, owner):
            raise _Lost(job_id)
        yield s, job


def _ensure_remote_job(ctx: WorkerContext, client, job_id: str, owner: str) -> str:
    """The remote job id: stored, found by metadata (a create whose id was never stored), or created."""
    with _update(ctx, job_id, owner) as (s, job):
        remote = dict(job.remote)
        if remote.get("job_id"):
            return remote["job_id"]
        train, validation = finetune_jobs.training_examples(s, job.tenant_id, job.dataset_id, job.prompt_set_id,
                                                            job.seed)
        hp = OpenAIHyperparameters.model_validate(job.hyperparameters)
        base_model, seed = job.base_model, job.seed
    existing = next(iter(client.fine_tuning.jobs.list(metadata={JOB_ID_METADATA_KEY: job_id}, limit=1).data), None)
    if existing is not None:
        with _update(ctx, job_id, owner) as (s, job):
            job.remote = {**job.remote, "job_id": existing.id, "status": existing.status}
            finetune_jobs.add_event(s, job_id, "message", f"found OpenAI job {existing.id} created by an earlier attempt")
        return existing.id
    files = {}
    for split, examples in (("training_file", train), ("validation_file", validation)):
        if not examples:
            continue
        if remote.get(split):
            files[split] = remote[split]
            continue
        uploaded = client.files.create(file=(f"{job_id}-{split.split('_')[0]}.jsonl",
                                             to_jsonl([{"messages": e} for e in examples])), purpose="fine-tune")
        files[split] = uploaded.id
        with _update(ctx, job_id, owner) as (s, job):
            job.remote = {**job.remote, split: uploaded.id}
            finetune_jobs.add_event(s, job_id, "message", f"uploaded the {split.split('_')[0]} split as {uploaded.id} "
                                    f"({len(examples)} examples, {uploaded.bytes} bytes)")
    created = client.fine_tuning.jobs.create(model=base_model, seed=seed, **hp.job_params(job_id), **files)
    with _update(ctx, job_id, owner) as (s, job):
        job.remote = {**job.remote, "job_id": created.id, "status": created.status}
        job.status = _our_status(created.status)
        finetune_jobs.add_event(s, job_id, "message", f"created OpenAI job {created.id} on {base_model}; "
                                f"it is {created.status}", {"remote_job_id": created.id, "remote_status": created.status})
    return created.id


def _our_status(remote_status: str) -> str:
    """The status we show while the remote job is active: theirs (validating_files, queued, running,
    pausing, paused, ...; terminal ones are written by _finish once mirrored)."""
    return remote_status[:20] if remote_status else "running"


def _follow(ctx: WorkerContext, client, job_id: str, remote_id: str, owner: str, beat: Heartbeat) -> None:
    """Poll until the remote job ends, mirroring it; wait longer while nothing changes. OpenAI being
    unreachable or busy (after the SDK's retries) is a warning event and another poll, not a failure."""
    settings, transient = ctx.settings, _transient_errors()
    wait = settings.openai_poll_min_s
    while True:
        with _update(ctx, job_id, owner) as (s, job):
            cancel, desired, remote = job.cancel_requested, job.remote.get("desired"), dict(job.remote)
        if cancel and not remote.get("cancel_sent"):
            client.fine_tuning.jobs.cancel(remote_id)
            _set_remote(ctx, job_id, owner, cancel_sent=True, message=f"cancelled OpenAI job {remote_id}")
        elif desired == "paused" and remote.get("status") == "running" and not remote.get("pause_sent"):
            client.fine_tuning.jobs.pause(remote_id)
            _set_remote(ctx, job_id, owner, pause_sent=True, resume_sent=False, message=f"paused OpenAI job {remote_id}")
        elif desired == "running" and remote.get("status") == "paused" and not remote.get("resume_sent"):
            client.fine_tuning.jobs.resume(remote_id)
            _set_remote(ctx, job_id, owner, resume_sent=True, pause_sent=False, message=f"resumed OpenAI job {remote_id}")
        try:
            remote_job = client.fine_tuning.jobs.retrieve(remote_id)
            changed = _mirror(ctx, client, job_id, owner, remote_job)
        except transient as exc:  # after the SDK's own retries: OpenAI is down or busy, the job is not
            _set_remote(ctx, job_id, owner, message=f"{_describe(exc)}; polling again", kind="warning")
            remote_job, changed = None, False
        if remote_job is not None and remote_job.status in REMOTE_TERMINAL:
            _conclude(ctx, job_id, owner, remote_job)
            return
        wait = settings.openai_poll_min_s if changed else min(wait * 1.5, settings.openai_poll_max_s)
        if beat.lost.wait(wait):
            raise _Lost(job_id)


def _set_remote(ctx: WorkerContext, job_id: str, owner: str, *, message: str, kind: str = "message",
                **values: Any) -> None:
    with _update(ctx, job_id, owner) as (s, job):
        job.remote = {**job.remote, **values}
        finetune_jobs.add_event(s, job_id, kind, message)


def _mirror(ctx: WorkerContext, client, job_id: str, owner: str, remote_job) -> bool:
    """Copy the remote job's state, new events and new checkpoints; True when anything changed."""
    with _update(ctx, job_id, owner) as (s, job):
        last_event = job.remote.get("last_event_id")
    events = _new_events(client, remote_job.id, last_event)
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(remote_job.id, limit=100))
    with _update(ctx, job_id, owner) as (s, job):
        before = (job.remote.get("status"), job.remote.get("last_event_id"), job.remote.get("trained_tokens"))
        if remote_job.status != before[0]:
            finetune_jobs.add_event(s, job_id, "message", f"OpenAI job {remote_job.id} is {remote_job.status}",
                                    {"remote_status": remote_job.status})
        if remote_job.status not in REMOTE_TERMINAL:
            job.status = _our_status(remote_job.status)
        remote = {**job.remote, "status": remote_job.status, "trained_tokens": remote_job.trained_tokens,
                  "estimated_finish": remote_job.estimated_finish, "fine_tuned_model": remote_job.fine_tuned_model,
                  "hyperparameters": _plain(remote_job.hyperparameters)}
        if remote_job.estimated_finish:
            job.eta_seconds = max(0.0, remote_job.estimated_finish - time.time())
        for event in events:
            _store_event(s, job, event)
            remote["last_event_id"] = event.id
        for checkpoint in checkpoints:
            _store_checkpoint(s, job, checkpoint)
        job.remote = remote
        return before != (remote["status"], remote.get("last_event_id"), remote["trained_tokens"]) or bool(events)


def _new_events(client, remote_id: str, last_seen: str | None) -> list:
    """Events after ``last_seen``, oldest first (the API lists newest first, pages going back in time)."""
    fresh = []
    for event in client.fine_tuning.jobs.list_events(remote_id, limit=100):
        if event.id == last_seen:
            break
        fresh.append(event)
    return fresh[::-1]


def _store_event(s, job: FinetuneJob, event) -> None:
    data = {"remote_event_id": event.id, "level": event.level, **(_plain(event.data) or {})}
    if event.type == "metrics" and event.data:
        metrics = _plain(event.data)
        step, total = metrics.get("step"), metrics.get("total_steps")
        if step is not None:
            job.step = step
        if total:
            job.total_steps = total
        job.metrics = {**job.metrics, **{k: v for k, v in metrics.items() if k not in ("step", "total_steps")}}
        finetune_jobs.add_event(s, job.id, "metrics", event.message, data)
    else:
        kind = "warning" if event.level in ("warn", "error") else "message"
        finetune_jobs.add_event(s, job.id, kind, event.message, data)


def _store_checkpoint(s, job: FinetuneJob, checkpoint) -> None:
    """Each remote checkpoint once, as a checkpoint and as an adapter of its own model."""
    if repo.get_checkpoint(s, job.id, checkpoint.step_number) is not None:
        return
    row = Checkpoint(job_id=job.id, step=checkpoint.step_number, path=checkpoint.fine_tuned_model_checkpoint,
                     metrics=_plain(checkpoint.metrics) or {})
    s.add(row)
    s.flush()
    s.add(Adapter(tenant_id=job.tenant_id, job_id=job.id, checkpoint_id=row.id, prompt_set_id=job.prompt_set_id,
                  base_model=job.base_model, method=job.method, kind="openai",
                  remote_model=checkpoint.fine_tuned_model_checkpoint))
    finetune_jobs.add_event(s, job.id, "checkpoint", f"checkpoint model {checkpoint.fine_tuned_model_checkpoint}",
                            {"step": checkpoint.step_number, "checkpoint_id": row.id,
                             "model": checkpoint.fine_tuned_model_checkpoint})


def _conclude(ctx: WorkerContext, job_id: str, owner: str, remote_job) -> None:
    if remote_job.status == "succeeded":
        _finish(ctx, job_id, owner, "succeeded", model=remote_job.fine_tuned_model)
    elif remote_job.status == "cancelled":
        _finish(ctx, job_id, owner, "cancelled")
    else:
        error = remote_job.error
        reason = (f"OpenAI job {remote_job.id} failed: {error.code}: {error.message}"
                  + (f" (param: {error.param})" if error.param else "")) if error else f"OpenAI job {remote_job.id} failed"
        _finish(ctx, job_id, owner, "failed", reason, remote_error=_plain(error))


def _finish(ctx: WorkerContext, job_id: str, owner: str, status: str, error: str | None = None, *,
            model: str | None = None, remote_error: dict | None = None) -> None:
    with ctx.db.transaction() as s:
        job = repo.lock_job(s, job_id)
        if not owns(job, owner):
            log.warning("openai job %s was taken from this worker; its %s result is not written", job_id, status)
            return
        job.status, job.finished_at, job.error, job.owner, job.eta_seconds = status, utcnow(), error, None, None
        if remote_error:
            job.remote = {**job.remote, "error": remote_error}
        if model and repo.get_adapter_for_job(s, job_id) is None:
            s.add(Adapter(tenant_id=job.tenant_id, job_id=job.id, prompt_set_id=job.prompt_set_id,
                          base_model=job.base_model, method=job.method, kind="openai", remote_model=model))
        finetune_jobs.add_event(s, job_id, "message", f"job {status}" + (f": {error}" if error else "")
                                + (f"; fine-tuned model {model}" if model else ""))


def _plain(value: Any) -> Any:
    """An SDK object as plain JSON data."""
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    return value
