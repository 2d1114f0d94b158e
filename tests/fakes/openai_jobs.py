"""The fake OpenAI API's fine-tuning jobs: creation checks, a scripted deterministic progression,
events and checkpoints, cursor pages. The caller holds the fake's lock around every method."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.fakes.openai_errors import api_error

ORGANIZATION = "synthaug-test"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CREATE_FIELDS = {"model", "training_file", "validation_file", "suffix", "seed", "metadata", "method",
                 "hyperparameters", "integrations"}
# What "auto" becomes once files are validated (n_epochs: the cookbook's rule from the example count).
AUTO_BATCH_SIZE = 1
AUTO_LEARNING_RATE_MULTIPLIER = 1.8
STEP_SECONDS = 10  # estimated_finish: this many seconds per remaining step


@dataclass(frozen=True)
class JobScript:
    """How a job moves, one tick per retrieve: queued at ``validating_ticks``, running
    ``queued_ticks`` later, ``steps_per_tick`` steps a tick, succeeded the tick after the last step."""

    validating_ticks: int = 1
    queued_ticks: int = 1
    steps: int = 6
    steps_per_tick: int = 1
    fail_at_tick: int | None = None
    failure: dict = field(default_factory=dict)


class Host(Protocol):
    """What the jobs need from the fake that holds them."""

    def new_id(self, prefix: str) -> str: ...
    def now(self) -> int: ...
    def stored_file(self, file_id: str) -> tuple[dict, bytes] | None: ...
    def store_file(self, filename: str, purpose: str, content: bytes) -> str: ...
    def mark_served(self, model: str) -> None: ...
    def fine_tunable(self) -> tuple[str, ...]: ...
    def job_script(self) -> JobScript: ...


@dataclass
class _Job:
    obj: dict
    script: JobScript
    n_epochs: int
    file_tokens: int
    events: list[dict] = field(default_factory=list)  # oldest first
    checkpoints: list[dict] = field(default_factory=list)  # oldest first
    tick: int = 0
    step: int = 0
    resume_to: str | None = None


class FineTuneJobs:
    def __init__(self, host: Host):
        self.host = host
        self.by_id: dict[str, _Job] = {}
        self.fine_tuned: set[str] = set()

    def public(self, job_id: str) -> dict:
        return copy.deepcopy(self._get(job_id).obj)

    def create(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise api_error(400, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - CREATE_FIELDS)
        if unknown:
            raise api_error(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model, training_file = body.get("model"), body.get("training_file")
        if not isinstance(model, str) or not model:
            raise api_error(400, "Missing required parameter: 'model'.", param="model")
        if not isinstance(training_file, str) or not training_file:
            raise api_error(400, "Missing required parameter: 'training_file'.", param="training_file")
        if model not in self.host.fine_tunable() and model not in self.fine_tuned:
            raise api_error(400, f"Model {model} is not available for fine-tuning or does not exist.",
                            param="model", code="model_not_available")
        training = self._tuning_file(training_file, "training_file")
        validation_file = body.get("validation_file")
        if validation_file is not None:
            self._tuning_file(validation_file, "validation_file")
        suffix = body.get("suffix")
        if suffix is not None and not (isinstance(suffix, str) and 1 <= len(suffix) <= 64):
            raise api_error(400, "Invalid value for 'suffix': expected a string of 1 to 64 characters.",
                            param="suffix")
        metadata = body.get("metadata")
        _check_metadata(metadata)
        examples = sum(1 for line in training.decode(errors="replace").splitlines() if line.strip())
        hyperparameters = _resolved_hyperparameters(body, examples)
        job_id = self.host.new_id("ftjob-")
        seed = body.get("seed")
        if seed is None:
            seed = int(job_id[6:14], 16) % (2**31)
        job = _Job(
            obj={"object": "fine_tuning.job", "id": job_id, "model": model, "created_at": self.host.now(),
                 "finished_at": None, "fine_tuned_model": None, "organization_id": f"org-{ORGANIZATION}",
                 "result_files": [], "status": "validating_files", "validation_file": validation_file,
                 "training_file": training_file, "hyperparameters": dict(hyperparameters), "trained_tokens": None,
                 "error": None, "user_provided_suffix": suffix, "seed": seed, "estimated_finish": None,
                 "integrations": body.get("integrations") or [], "metadata": metadata,
                 "method": {"type": "supervised", "supervised": {"hyperparameters": dict(hyperparameters)}}},
            script=self.host.job_script(), n_epochs=hyperparameters["n_epochs"],
            file_tokens=len(training.split()))
        self.by_id[job_id] = job
        self._event(job, f"Created fine-tuning job: {job_id}")
        files = f"training file: {training_file}" + (
            f" and validation file: {validation_file}" if validation_file else "")
        self._event(job, f"Validating {files}")
        return self.public(job_id)

    def retrieve(self, job_id: str, advance: bool) -> dict:
        self._get(job_id)
        if advance:
            self.tick(job_id)
        return self.public(job_id)

    def list(self, query: dict[str, str]) -> dict:
        wanted = {key[9:-1]: value for key, value in query.items() if key.startswith("metadata[") and key.endswith("]")}
        jobs = [j.obj for j in reversed(self.by_id.values())
                if all((j.obj["metadata"] or {}).get(k) == v for k, v in wanted.items())]
        data, has_more = _page(jobs, query, 20, "fine-tuning job")
        return {"object": "list", "data": copy.deepcopy(data), "has_more": has_more}

    def list_events(self, job_id: str, query: dict[str, str]) -> dict:
        data, has_more = _page(list(reversed(self._get(job_id).events)), query, 20, "event")
        return {"object": "list", "data": copy.deepcopy(data), "has_more": has_more}

    def list_checkpoints(self, job_id: str, query: dict[str, str]) -> dict:
        data, has_more = _page(list(reversed(self._get(job_id).checkpoints)), query, 10, "checkpoint")
        return {"object": "list", "data": copy.deepcopy(data), "has_more": has_more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def act(self, job_id: str, action: str) -> dict:
        """cancel (any job not yet ended; a cancelled one stays so), pause (a running job), resume (a paused one)."""
        job = self._get(job_id)
        status = job.obj["status"]
        if action == "cancel":
            if status in ("succeeded", "failed"):
                raise api_error(400, f"Job {job_id} has already completed with status {status} and cannot be "
                                     "cancelled.", param="fine_tuning_job_id")
            if status != "cancelled":
                job.obj.update(status="cancelled", finished_at=self.host.now(), estimated_finish=None)
                self._event(job, "Fine-tuning job cancelled")
        elif action == "pause":
            if status != "running":
                raise api_error(400, f"Only a running job can be paused; {job_id} is {status}.",
                                param="fine_tuning_job_id")
            job.resume_to, job.obj["status"] = status, "paused"
            self._event(job, "Fine-tuning job paused")
        else:
            if status != "paused":
                raise api_error(400, f"Only a paused job can be resumed; {job_id} is {status}.",
                                param="fine_tuning_job_id")
            job.obj["status"], job.resume_to = job.resume_to or "running", None
            self._event(job, "Fine-tuning job resumed")
        return self.public(job_id)

    def tick(self, job_id: str) -> None:
        """Move a job one tick along its script (an ended or paused job stays where it is)."""
        job = self._get(job_id)
        status, script = job.obj["status"], job.script
        if status in TERMINAL or status == "paused":
            return
        job.tick += 1
        if script.fail_at_tick is not None and job.tick >= script.fail_at_tick:
            self._fail(job)
        elif status == "validating_files":
            if job.tick >= script.validating_ticks:
                job.obj["status"] = "queued"
                self._event(job, "Files validated, moving job to queued state")
        elif status == "queued":
            if job.tick >= script.validating_ticks + script.queued_ticks:
                job.obj["status"] = "running"
                self._event(job, "Fine-tuning job started")
                self._train(job)
        elif job.step < script.steps:
            self._train(job)
        else:
            self._succeed(job)

    # ----- the script's moves

    def _train(self, job: _Job) -> None:
        steps, validated = job.script.steps, job.obj["validation_file"] is not None
        saved = {math.ceil(steps * epoch / job.n_epochs) for epoch in range(max(1, job.n_epochs - 2), job.n_epochs + 1)}
        for _ in range(job.script.steps_per_tick):
            if job.step >= steps:
                break
            job.step += 1
            metrics = _metrics(job.step, validated)
            message = f"Step {job.step}/{steps}: training loss={metrics['train_loss']:.2f}"
            if validated:
                message += f", validation loss={metrics['valid_loss']:.2f}"
            self._event(job, message, kind="metrics", data={**metrics, "total_steps": steps})
            if job.step in saved:
                self._checkpoint(job, metrics)
        job.obj["estimated_finish"] = self.host.now() + STEP_SECONDS * (steps - job.step + 1)

    def _checkpoint(self, job: _Job, metrics: dict) -> None:
        model = f"{_model_name(job.obj)}:ckpt-step-{job.step}"
        full = {"full_valid_loss": metrics["valid_loss"] + 0.05,
                "full_valid_mean_token_accuracy": metrics["valid_mean_token_accuracy"] - 0.01} \
            if "valid_loss" in metrics else {}
        job.checkpoints.append({
            "object": "fine_tuning.job.checkpoint", "id": self.host.new_id("ftckpt_"), "created_at": self.host.now(),
            "fine_tuned_model_checkpoint": model, "fine_tuning_job_id": job.obj["id"], "step_number": job.step,
            "metrics": {**metrics, **full}})
        self.host.mark_served(model)
        self._event(job, f"Checkpoint created at step {job.step}")

    def _succeed(self, job: _Job) -> None:
        model = _model_name(job.obj)
        rows = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"] + [
            ",".join(str(e["data"].get(k, "")) for k in
                     ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"))
            for e in job.events if e["type"] == "metrics"]
        results = self.host.store_file("step_metrics.csv", "fine-tune-results", ("\n".join(rows) + "\n").encode())
        job.obj.update(status="succeeded", fine_tuned_model=model, finished_at=self.host.now(), estimated_finish=None,
                       trained_tokens=job.file_tokens * job.n_epochs, result_files=[results])
        self.fine_tuned.add(model)
        self.host.mark_served(model)
        for message in (f"New fine-tuned model created: {model}", "Evaluating model against our usage policies",
                        "Usage policy evaluations completed, model is now enabled for sampling",
                        "The job has successfully completed"):
            self._event(job, message)

    def _fail(self, job: _Job) -> None:
        error = {"code": "invalid_training_file", "message": "The job failed.", "param": None, **job.script.failure}
        job.obj.update(status="failed", error=error, finished_at=self.host.now(), estimated_finish=None)
        self._event(job, error["message"], level="error")

    def _event(self, job: _Job, message: str, level: str = "info", kind: str = "message",
               data: dict | None = None) -> None:
        job.events.append({"object": "fine_tuning.job.event", "id": self.host.new_id("ftevent-"),
                           "created_at": self.host.now(), "level": level, "message": message,
                           "data": data or {}, "type": kind})

    def _get(self, job_id: str) -> _Job:
        if job_id not in self.by_id:
            raise api_error(404, f"Could not find fine tune: {job_id}", param="fine_tune_id")
        return self.by_id[job_id]

    def _tuning_file(self, file_id: Any, param: str) -> bytes:
        stored = self.host.stored_file(file_id) if isinstance(file_id, str) else None
        if stored is None:
            raise api_error(400, f"Invalid file ID: {file_id}. The file does not exist.", param=param,
                            code="invalid_file_id" if param == "training_file" else "invalid_validation_file")
        if stored[0]["purpose"] != "fine-tune":
            raise api_error(400, f"File {file_id} has purpose {stored[0]['purpose']!r}; fine-tuning needs "
                                 "purpose 'fine-tune'.", param=param)
        return stored[1]


def _model_name(job: dict) -> str:
    """ft:<base>:<organization>:<suffix>:<job's own part>, as the API names a fine-tune."""
    base = job["model"].split(":")[1] if job["model"].startswith("ft:") else job["model"]
    return f"ft:{base}:{ORGANIZATION}:{job['user_provided_suffix'] or ''}:{job['id'][6:14]}"


def _metrics(step: int, validated: bool) -> dict:
    loss = round(0.15 + 2.0 * 0.7**step, 4)
    accuracy = round(min(0.99, 0.5 + 0.45 * (1 - 0.7**step)), 4)
    metrics = {"step": step, "train_loss": loss, "train_mean_token_accuracy": accuracy}
    if validated:
        metrics |= {"valid_loss": round(loss + 0.08, 4), "valid_mean_token_accuracy": round(accuracy - 0.03, 4)}
    return metrics


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()):
        raise api_error(400, "Invalid 'metadata': at most 16 string keys of up to 64 characters with string "
                             "values of up to 512 characters.", param="metadata")


def _resolved_hyperparameters(body: dict, examples: int) -> dict:
    """The supervised hyperparameters with "auto" replaced as the API does after validation."""
    method = body.get("method")
    if method is None:
        method = {"type": "supervised", "supervised": {"hyperparameters": body.get("hyperparameters") or {}}}
    if not isinstance(method, dict) or method.get("type") != "supervised":
        raise api_error(400, "Invalid 'method.type': this fake knows 'supervised' only.", param="method.type")
    given = (method.get("supervised") or {}).get("hyperparameters") or {}
    auto_epochs = 3 if examples * 3 >= 100 else min(25, 100 // max(examples, 1))
    if examples * 3 > 25_000:
        auto_epochs = max(1, 25_000 // examples)
    checks = {"n_epochs": (auto_epochs, lambda v: isinstance(v, int) and 1 <= v <= 50),
              "batch_size": (AUTO_BATCH_SIZE, lambda v: isinstance(v, int) and 1 <= v <= 256),
              "learning_rate_multiplier": (AUTO_LEARNING_RATE_MULTIPLIER,
                                           lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)}
    resolved = {}
    for name, (auto, valid) in checks.items():
        value = given.get(name, "auto")
        if value != "auto" and not valid(value):
            raise api_error(400, f"Invalid value for '{name}': {value!r}.",
                            param=f"method.supervised.hyperparameters.{name}")
        resolved[name] = auto if value == "auto" else value
    return resolved


def _page(items: list[dict], query: dict[str, str], default_limit: int, what: str) -> tuple[list[dict], bool]:
    """One cursor page of ``items`` (already in the API's order): those after ``after``, ``limit`` of them."""
    raw_limit = query.get("limit")
    limit = int(raw_limit) if raw_limit and raw_limit.isdigit() else default_limit if raw_limit is None else 0
    if not 1 <= limit <= 100:
        raise api_error(400, f"Invalid 'limit': {raw_limit!r}; expected an integer from 1 to 100.", param="limit")
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise api_error(400, f"Invalid 'after': there is no {what} {after}.", param="after")
        items = items[ids.index(after) + 1:]
    return items[:limit], len(items) > limit
