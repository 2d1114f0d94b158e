"""Task bodies shared by the embedded runner and the Celery workers.

Each task takes an id, reloads its row in its own transactions and writes status, progress,
events and results back. Running a task twice for the same id is safe: a finished job is left
alone, a running one resumes from its last checkpoint, and samples are unique per index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from app.db import repositories as repo
from app.db.base import utcnow
from app.db.models import Adapter, Checkpoint, FinetuneJob, Generation
from app.db.outages import retry_outages
from app.domain.hyperparameters import Hyperparameters
from app.domain.post_filters import PostFilter, RealText, sample_ref
from app.domain.sampling import FilterSettings, SamplingParams, sample_seed
from app.errors import InvalidInput
from app.logs import job_context
from app.server_paths import describe_failure
from app.services import finetune_jobs, generations, prompt_sets, reports
from app.services.token_counts import load_model_tokenizer
from app.settings import Settings
from worker.checkpoints import prune_checkpoints
from worker.context import WorkerContext
from worker.lifecycle import Heartbeat, check_tenant_capacity, claim, heartbeat, owns
from worker.openai_jobs import run_openai_finetune
from worker.reporting.corpus_report import run_report

log = logging.getLogger(__name__)


# fine-tuning

def run_finetune(ctx: WorkerContext, job_id: str) -> None:
    """Train the job's adapter; register it on success. A delivery that cannot claim the job does nothing."""
    owner = ctx.new_owner()
    claimed = _claim_finetune(ctx, job_id, owner)
    if claimed is None:
        return
    resume, attempt = claimed
    with job_context(attempt=attempt), heartbeat(ctx.db, FinetuneJob, job_id, owner,
                                                 ctx.settings.heartbeat_interval_s) as beat:
        try:
            spec, train, evaluation = _prepare_finetune(ctx, job_id, resume)
        except InvalidInput as exc:
            _finish_job(ctx, job_id, owner, "failed", error=exc.detail)
            return
        except Exception as exc:
            log.exception("fine-tune %s could not start", job_id)
            _finish_job(ctx, job_id, owner, "failed", error=f"could not start: {describe_failure(exc, ctx.settings)}")
            return
        reporter = _JobReporter(ctx, job_id, beat)
        try:
            result = ctx.trainer(spec.method).train(spec, train, evaluation, reporter.on_event, reporter.should_stop)
        except Exception as exc:
            log.exception("fine-tune %s failed", job_id)
            _finish_job(ctx, job_id, owner, "failed", error=describe_failure(exc, ctx.settings))
            return
    if result.stopped and beat.lost.is_set():
        return  # the job was taken from this worker; whoever has it now finishes it
    if result.stopped:
        _finish_job(ctx, job_id, owner, "cancelled", metrics=result.metrics)
    else:
        _finish_job(ctx, job_id, owner, "succeeded", metrics=result.metrics, adapter_dir=result.adapter_dir)


def _claim_finetune(ctx: WorkerContext, job_id: str, owner: str) -> tuple[Path | None, int] | None:
    """Claim the job: the checkpoint to resume from (None: from the start) and the attempt, or None
    when this delivery has nothing to run."""
    with ctx.db.transaction() as s:
        job = repo.lock_job(s, job_id)
        check_tenant_capacity(s, job, ctx.settings.tenant_running_cap)
        if not claim(job, ctx.settings.max_attempts, owner, ctx.settings.stale_after_s):
            return None
        checkpoints = repo.list_checkpoints(s, job_id)
        resume = Path(checkpoints[-1].path) if checkpoints else None
        finetune_jobs.add_event(
            s, job_id, "message",
            f"attempt {job.attempts}" + (f", resuming from step {checkpoints[-1].step}" if resume else ""),
            {"attempt": job.attempts, "resumed_from_step": checkpoints[-1].step if resume else None, "owner": owner},
        )
        return resume, job.attempts


def _prepare_finetune(ctx: WorkerContext, job_id: str, resume: Path | None):
    """The claimed job's spec and examples."""
    from worker.training.base import TrainSpec

    settings = ctx.settings
    with ctx.db.transaction() as s:
        job = s.get(FinetuneJob, job_id)
        train, evaluation = finetune_jobs.training_examples(s, job.tenant_id, job.dataset_id, job.prompt_set_id, job.seed)
        spec_args = dict(
            base_model=job.base_model, method=job.method, seed=job.seed,
            hyperparameters=Hyperparameters.model_validate(job.hyperparameters),
        )
    _check_lengths(ctx, job_id, spec_args["base_model"], spec_args["hyperparameters"], train + evaluation)
    spec = TrainSpec(
        **spec_args,
        output_dir=job_dir(settings, job_id),
        cache_dir=settings.resolved_cache_dir,
        resume_from=resume if resume is not None and resume.is_dir() else None,
        unpacked_base_max_bytes=settings.cpu_unpacked_base_max_bytes,
    )
    return spec, train, evaluation


def _check_lengths(ctx: WorkerContext, job_id: str, base_model: str, hp: Hyperparameters, examples: list) -> None:
    """Refuse examples over max_seq_length (the API does when the model was prepared) or warn if allowed."""
    from worker.models import materialize_base_model

    tokenizer = load_model_tokenizer(materialize_base_model(base_model, ctx.settings.resolved_cache_dir))
    check = finetune_jobs.measure_lengths(tokenizer.example_length, examples, hp.max_seq_length)
    if check.too_long and not hp.allow_truncation:
        raise InvalidInput(check.refusal())
    if check.too_long:
        with ctx.db.transaction() as s:
            finetune_jobs.add_event(s, job_id, "warning", check.warning(), {"too_long": check.too_long})


def job_dir(settings: Settings, job_id: str) -> Path:
    """Where a local fine-tune writes its checkpoints and its adapter."""
    return settings.resolved_artifact_dir / "jobs" / job_id


def _finish_job(
    ctx: WorkerContext, job_id: str, owner: str, status: str, *, error: str | None = None,
    metrics: dict | None = None, adapter_dir: Path | None = None,
) -> None:
    """Write the job's final state; retried through a passing lock or outage, so it is not left running."""
    retry_outages(partial(_write_job_result, ctx, job_id, owner, status, error, metrics, adapter_dir))


def _write_job_result(
    ctx: WorkerContext, job_id: str, owner: str, status: str, error: str | None, metrics: dict | None,
    adapter_dir: Path | None,
) -> None:
    with ctx.db.transaction() as s:
        job = repo.lock_job(s, job_id)
        if not owns(job, owner):
            log.warning("fine-tune %s was taken from this worker; its %s result is not written", job_id, status)
            return
        job.status, job.finished_at, job.error, job.owner = status, utcnow(), error, None
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

    def __init__(self, ctx: WorkerContext, job_id: str, beat: Heartbeat) -> None:
        self.ctx, self.job_id, self.beat = ctx, job_id, beat
        self.started = time.monotonic()
        self.first_step: int | None = None

    def on_event(self, event) -> None:
        with self.ctx.db.transaction() as s:
            job = repo.lock_job(s, self.job_id)
            if not owns(job, self.beat.owner):
                # Taken over (re-queued as stale, then claimed by another worker) or finished: its
                # progress, events and checkpoints are the new owner's now; this run stops at its
                # next should_stop.
                self.beat.lost.set()
                log.warning("fine-tune %s is no longer this worker's; its %s event is not written",
                            self.job_id, event.kind)
                return
            # Tenants read events: a checkpoint is named by its id, never by its server path.
            data = {k: v for k, v in vars(event).items()
                    if v is not None and k not in ("kind", "message", "data", "path")}
            data.update(event.data)
            if event.kind == "checkpoint" and event.path and event.step is not None:
                checkpoint = repo.get_checkpoint(s, self.job_id, event.step)
                if checkpoint is None:
                    checkpoint = Checkpoint(job_id=self.job_id, step=event.step, epoch=event.epoch, path=event.path)
                    s.add(checkpoint)
                    s.flush()
                data["checkpoint_id"] = checkpoint.id
            finetune_jobs.add_event(s, self.job_id, event.kind, event.message, data)
            if event.step is not None:
                self._progress(job, event.step, event.total_steps)
            if event.kind == "metrics" and event.loss is not None:
                job.metrics = {**job.metrics, "loss": event.loss, "learning_rate": event.learning_rate}
            if event.kind == "metrics" and event.data.get("tokens_per_second") is not None:
                job.metrics = {**job.metrics, "tokens_per_second": event.data["tokens_per_second"]}
            if event.kind == "eval" and event.eval_loss is not None:
                job.metrics = {**job.metrics, "eval_loss": event.eval_loss}
        if event.kind == "checkpoint":
            prune_checkpoints(self.ctx.db, self.job_id, self.ctx.settings.keep_checkpoints,
                              job_dir(self.ctx.settings, self.job_id))

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
        """Stop when the job is cancelled, or when it is no longer this worker's."""
        if self.beat.lost.is_set():
            return True
        with self.ctx.db.transaction(write=False) as s:
            job = s.get(FinetuneJob, self.job_id)
            if not owns(job, self.beat.owner):
                self.beat.lost.set()
                return True
            return bool(job.cancel_requested)  # the heartbeat thread keeps the row fresh


# generation

def run_generation(ctx: WorkerContext, generation_id: str) -> None:
    """Draw, judge and store candidates chunk by chunk until every label has its count or its budget
    is spent, or the generation is cancelled. A delivery that cannot claim it does nothing."""
    owner = ctx.new_owner()
    with ctx.db.transaction() as s:
        gen = s.get(Generation, generation_id, with_for_update=True)
        check_tenant_capacity(s, gen, ctx.settings.tenant_running_cap)
        if not claim(gen, ctx.settings.max_attempts, owner, ctx.settings.stale_after_s):
            return
        attempt = gen.attempts
    with job_context(attempt=attempt), heartbeat(ctx.db, Generation, generation_id, owner,
                                                 ctx.settings.heartbeat_interval_s) as beat:
        try:
            run = _prepare_generation(ctx, generation_id, owner)
            outcome = "drawn"
            while outcome == "drawn" and not beat.lost.is_set():
                outcome = _draw_chunk(ctx, run)
        except Exception as exc:
            log.exception("generation %s failed", generation_id)
            _finish_generation(ctx, generation_id, owner, "failed", describe_failure(exc, ctx.settings))
            return
    if outcome == "done":
        _finish_generation(ctx, generation_id, owner, "succeeded")
    elif outcome == "cancelled":
        _finish_generation(ctx, generation_id, owner, "cancelled")
    else:
        log.warning("generation %s was taken from this worker; it stops here", generation_id)


@dataclass
class _GenerationRun:
    """What a generation needs between chunks: its target, prompts, parameters, filter and sampler."""

    generation_id: str
    owner: str
    sampler: Any
    target: Any
    messages: dict[str, list[dict[str, str]]]
    params: SamplingParams
    chunk_size: int
    post_filter: PostFilter
    provenance: dict[str, Any]


def _prepare_generation(ctx: WorkerContext, generation_id: str, owner: str) -> _GenerationRun:
    """Read the claimed generation, then build its filter, sampler and chunk size outside the transaction
    (loading a model or fitting a classifier must not hold the row, or SQLite's write lock)."""
    from worker.sampling.base import SampleTarget

    with ctx.db.transaction() as s:
        gen = s.get(Generation, generation_id)
        adapter = s.get(Adapter, gen.adapter_id)
        prompt_set = prompt_sets.load(prompt_sets.get(s, gen.tenant_id, adapter.prompt_set_id))
        messages = {label: prompt_set.inference_messages(label) for label in gen.counts}
        params = SamplingParams.model_validate(gen.params)
        filters = FilterSettings.model_validate(gen.filters)
        dataset_id = s.get(FinetuneJob, adapter.job_id).dataset_id
        real = [RealText(r.id, r.label, r.text) for r in repo.records_for_split(s, dataset_id, "train")]
        accepted = [(sample_ref(g, label, i), text) for g, label, i, text in repo.accepted_samples(s, gen.corpus_id)]
        target = SampleTarget(adapter.id, Path(adapter.path) if adapter.path else None, adapter.base_model,
                              "nf4" if adapter.method == "qlora" else "none", kind=adapter.kind,
                              remote_model=adapter.remote_model)
        chunk_size, sampler_name = gen.chunk_size or gen.batch_size, gen.sampler
        provenance = {
            "generation_id": gen.id, "adapter_id": adapter.id, "base_model": adapter.base_model,
            "method": adapter.method, "kind": adapter.kind, "remote_model": adapter.remote_model,
            "prompt_set_id": adapter.prompt_set_id, "params": gen.params,
            "seed": params.seed, "sampler": gen.sampler,
        }
    sampler = ctx.sampler(sampler_name)
    post_filter = PostFilter(filters, real, accepted)
    if chunk_size is None:
        chunk_size = sampler.chunk_size(target, params)
    with ctx.db.transaction() as s:
        gen = s.get(Generation, generation_id, with_for_update=True)
        gen.chunk_size = gen.chunk_size or chunk_size
        chunk_size = gen.chunk_size
    return _GenerationRun(generation_id, owner, sampler, target, messages, params, chunk_size, post_filter, provenance)


def _draw_chunk(ctx: WorkerContext, run: _GenerationRun) -> str:
    """Draw and store one chunk: "drawn", or why not: "done" (nothing left to draw), "cancelled",
    or "lost" (the generation is no longer this worker's)."""
    from worker.sampling.base import SampleRequest

    with ctx.db.transaction(write=False) as s:
        gen = s.get(Generation, run.generation_id)
        if not owns(gen, run.owner):
            return "lost"
        if gen.cancel_requested:
            return "cancelled"
        state = generations.tallies(s, gen)
    chunk = generations.plan_chunk(state, run.chunk_size)
    if not chunk:
        return "done"
    seeds = [sample_seed(run.params.seed, label, index) for label, index in chunk]
    requests = [SampleRequest.of(run.messages[label], seed) for (label, _), seed in zip(chunk, seeds)]
    completions = run.sampler.sample(run.target, requests, run.params)
    drawn = []
    for (label, index), seed, completion in zip(chunk, seeds, completions):
        tally = state[label]
        if tally.accepted >= tally.wanted:
            continue  # the chunk overshot this label's count: the surplus is not kept
        verdict = run.post_filter.judge(label, completion.text, completion.finish_reason)
        if verdict.accepted:
            tally.accepted += 1
            run.post_filter.accept(sample_ref(run.generation_id, label, index), completion.text)
        drawn.append(generations.Drawn(
            label, index, completion.text, completion.finish_reason, verdict,
            {**run.provenance, "label": label, "index": index, "sample_seed": seed,
             "prompt": run.messages[label], "tokens": completion.tokens, **dict(completion.details)},
        ))
    with ctx.db.transaction() as s:
        gen = s.get(Generation, run.generation_id, with_for_update=True)
        if not owns(gen, run.owner):
            return "lost"  # another worker draws these indexes now; its samples win
        generations.record_chunk(s, gen, drawn)
    return "drawn"


def _finish_generation(ctx: WorkerContext, generation_id: str, owner: str, status: str, error: str | None = None) -> None:
    """Write the generation's final state; retried like a fine-tune's."""
    retry_outages(partial(_write_generation_result, ctx, generation_id, owner, status, error))


def _write_generation_result(ctx: WorkerContext, generation_id: str, owner: str, status: str, error: str | None) -> None:
    with ctx.db.transaction() as s:
        gen = s.get(Generation, generation_id, with_for_update=True)
        if not owns(gen, owner):
            log.warning("generation %s was taken from this worker; its %s result is not written", generation_id, status)
            return
        generations.refresh_counts(s, gen)
        generations.finish(gen, status, error)
        if status == "succeeded" and ctx.settings.report_on_generation:
            reports.request(s, gen.tenant_id, gen.corpus_id)


TASKS: dict[str, Callable[[WorkerContext, str], None]] = {
    finetune_jobs.TASK_NAME: run_finetune,
    finetune_jobs.OPENAI_TASK_NAME: run_openai_finetune,
    generations.TASK_NAME: run_generation,
    reports.TASK_NAME: run_report,
}
