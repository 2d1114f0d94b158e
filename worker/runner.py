"""Task bodies shared by the embedded runner and the Celery workers.

Each task takes an id, reloads its row in its own transactions and writes status, progress,
events and results back. Running a task twice for the same id is safe: a finished job is left
alone, a running one resumes from its last checkpoint, and samples are unique per index.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, Adapter, Checkpoint, FinetuneJob, Generation, Sample
from app.domain.hyperparameters import Hyperparameters
from app.services import finetune_jobs, generations, prompt_sets
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def _claim(row: FinetuneJob | Generation | None, max_attempts: int) -> bool:
    """Move a queued/running row to running, counting the attempt; False when there is nothing to run."""
    if row is None or row.status in TERMINAL_STATUSES:
        return False
    if row.attempts >= max_attempts:
        row.status, row.finished_at = "failed", utcnow()
        row.error = f"gave up after {row.attempts} attempts (the worker stopped each time)"
        return False
    row.attempts += 1
    row.status = "running"
    row.started_at = row.started_at or utcnow()
    row.heartbeat_at = utcnow()
    return True


# fine-tuning

def run_finetune(ctx: WorkerContext, job_id: str) -> None:
    """Train the job's adapter; register it on success."""
    try:
        prepared = _prepare_finetune(ctx, job_id)
    except Exception as exc:
        log.exception("fine-tune %s could not start", job_id)
        _finish_job(ctx, job_id, "failed", error=f"could not start: {type(exc).__name__}: {exc}")
        return
    if prepared is None:
        return
    spec, train, evaluation = prepared
    reporter = _JobReporter(ctx, job_id)
    try:
        result = ctx.trainer(spec.method).train(spec, train, evaluation, reporter.on_event, reporter.should_stop)
    except Exception as exc:
        log.exception("fine-tune %s failed", job_id)
        _finish_job(ctx, job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return
    if result.stopped:
        _finish_job(ctx, job_id, "cancelled", metrics=result.metrics)
    else:
        _finish_job(ctx, job_id, "succeeded", metrics=result.metrics, adapter_dir=result.adapter_dir)


def _prepare_finetune(ctx: WorkerContext, job_id: str):
    """Claim the job and build its spec and examples; None when there is nothing to run."""
    from worker.training.base import TrainSpec

    db, settings = ctx.db, ctx.settings
    with db.transaction() as s:
        job = repo.lock_job(s, job_id)
        if job is not None and job.cancel_requested and job.status not in TERMINAL_STATUSES:
            job.status, job.finished_at = "cancelled", utcnow()
            return None
        if not _claim(job, settings.max_attempts):
            return None
        checkpoints = repo.list_checkpoints(s, job_id)
        resume = Path(checkpoints[-1].path) if checkpoints else None
        finetune_jobs.add_event(
            s, job_id, "message",
            f"attempt {job.attempts}" + (f", resuming from step {checkpoints[-1].step}" if resume else ""),
        )
        train, evaluation = _examples(s, job)
        spec_args = dict(
            base_model=job.base_model, method=job.method, seed=job.seed,
            hyperparameters=Hyperparameters.model_validate(job.hyperparameters),
        )
    spec = TrainSpec(
        **spec_args,
        output_dir=settings.resolved_artifact_dir / "jobs" / job_id,
        cache_dir=settings.resolved_cache_dir,
        resume_from=resume if resume is not None and resume.is_dir() else None,
    )
    return spec, train, evaluation


def _examples(session: Session, job: FinetuneJob) -> tuple[list, list]:
    """Chat examples of the train and validation splits; role variations from a seeded RNG."""
    prompt_set = prompt_sets.load(prompt_sets.get(session, job.tenant_id, job.prompt_set_id))
    rng = random.Random(job.seed)
    return tuple(
        [prompt_set.training_messages(r.label, r.text, rng) for r in finetune_jobs.training_records(session, job, split)]
        for split in ("train", "validation")
    )


def _finish_job(
    ctx: WorkerContext, job_id: str, status: str, *, error: str | None = None,
    metrics: dict | None = None, adapter_dir: Path | None = None,
) -> None:
    with ctx.db.transaction() as s:
        job = repo.lock_job(s, job_id)
        job.status, job.finished_at, job.error = status, utcnow(), error
        if metrics:
            job.metrics = {**job.metrics, **metrics}
        if adapter_dir is not None and repo.get_adapter_for_job(s, job_id) is None:
            s.add(Adapter(
                tenant_id=job.tenant_id, job_id=job.id, prompt_set_id=job.prompt_set_id,
                base_model=job.base_model, method=job.method, path=str(adapter_dir),
            ))
        finetune_jobs.add_event(s, job_id, "message", f"job {status}" + (f": {error}" if error else ""))


class _JobReporter:
    """Writes trainer events, progress, ETA, checkpoints and heartbeats; answers cancel checks."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.started = time.monotonic()
        self.first_step: int | None = None

    def on_event(self, event) -> None:
        with self.ctx.db.transaction() as s:
            job = s.get(FinetuneJob, self.job_id)
            job.heartbeat_at = utcnow()
            data = {k: v for k, v in vars(event).items() if v is not None and k not in ("kind", "message", "data")}
            data.update(event.data)
            finetune_jobs.add_event(s, self.job_id, event.kind, event.message, data)
            if event.step is not None:
                self._progress(job, event.step, event.total_steps)
            if event.kind == "metrics" and event.loss is not None:
                job.metrics = {**job.metrics, "loss": event.loss, "learning_rate": event.learning_rate}
            if event.kind == "eval" and event.eval_loss is not None:
                job.metrics = {**job.metrics, "eval_loss": event.eval_loss}
            if event.kind == "checkpoint" and event.path and event.step is not None:
                if repo.get_checkpoint(s, self.job_id, event.step) is None:
                    s.add(Checkpoint(job_id=self.job_id, step=event.step, epoch=event.epoch, path=event.path))

    def _progress(self, job: FinetuneJob, step: int, total: int | None) -> None:
        job.step = step
        if total:
            job.total_steps = total
        if self.first_step is None:
            self.first_step, self.started = step, time.monotonic()
        elif total and step > self.first_step:
            per_step = (time.monotonic() - self.started) / (step - self.first_step)
            job.eta_seconds = round(per_step * (total - step), 1)

    def should_stop(self) -> bool:
        with self.ctx.db.transaction() as s:
            job = s.get(FinetuneJob, self.job_id)
            job.heartbeat_at = utcnow()
            return bool(job.cancel_requested)


# generation

def run_generation(ctx: WorkerContext, generation_id: str) -> None:
    """Sample the generation's texts in batches; each batch is written once, in one transaction."""
    try:
        prepared = _prepare_generation(ctx, generation_id)
        if prepared is not None:
            target, messages, params, start, write = prepared
            if start < params.n:
                ctx.sampler("hf").sample(target, messages, params, start_index=start, on_batch=write)
    except Exception as exc:
        log.exception("generation %s failed", generation_id)
        _finish_generation(ctx, generation_id, "failed", f"{type(exc).__name__}: {exc}")
        return
    if prepared is not None:
        _finish_generation(ctx, generation_id, "succeeded")


def _prepare_generation(ctx: WorkerContext, generation_id: str):
    """Claim the generation; its target, prompt, parameters, resume index and batch writer."""
    from worker.sampling.base import SampleTarget, SamplingParams

    with ctx.db.transaction() as s:
        gen = s.get(Generation, generation_id, with_for_update=True)
        if not _claim(gen, ctx.settings.max_attempts):
            return None
        adapter = s.get(Adapter, gen.adapter_id)
        prompt_set = prompt_sets.load(prompt_sets.get(s, gen.tenant_id, adapter.prompt_set_id))
        messages = prompt_set.inference_messages(gen.label)
        # Batches are committed whole and in order, so the samples present are indexes 0..k-1.
        start = repo.count_samples(s, generation_id)
        provenance = {
            "adapter_id": adapter.id, "base_model": adapter.base_model, "method": adapter.method,
            "prompt_set_id": adapter.prompt_set_id, "prompt": messages, "params": gen.params,
            "seed": gen.params["seed"], "backend": "hf",
        }
        quantization = "nf4" if adapter.method == "qlora" else "none"
        target = SampleTarget(Path(adapter.path), adapter.base_model, quantization)
        params = SamplingParams(n=gen.n, **gen.params)
        write = _batch_writer(ctx, generation_id, gen.corpus_id, gen.label, provenance)
    return target, messages, params, start, write


def _batch_writer(
    ctx: WorkerContext, generation_id: str, corpus_id: str, label: str, provenance: dict
) -> Callable[[list[tuple[int, str]]], None]:
    def write(batch: list[tuple[int, str]]) -> None:
        with ctx.db.transaction() as s:
            have = repo.existing_sample_indexes(s, generation_id, (i for i, _ in batch))
            s.add_all(
                Sample(corpus_id=corpus_id, generation_id=generation_id, index=i, label=label,
                       text=text, provenance={**provenance, "index": i})
                for i, text in batch if i not in have
            )
            s.flush()
            gen = s.get(Generation, generation_id)
            gen.done = repo.count_samples(s, generation_id)
            gen.heartbeat_at = utcnow()

    return write


def _finish_generation(ctx: WorkerContext, generation_id: str, status: str, error: str | None = None) -> None:
    with ctx.db.transaction() as s:
        gen = s.get(Generation, generation_id)
        gen.status, gen.finished_at, gen.error = status, utcnow(), error


TASKS: dict[str, Callable[[WorkerContext, str], None]] = {
    finetune_jobs.TASK_NAME: run_finetune,
    generations.TASK_NAME: run_generation,
}
