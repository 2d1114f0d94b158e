"""Keep-last-N: a job's older checkpoint directories and rows go; the newest and adapter-backed ones stay."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from app.db import repositories as repo
from app.db.models import Adapter, Checkpoint, FinetuneJob
from tests.api.factories import insert_adapter, tenant_id_of, write_adapter_files
from worker.checkpoints import prune_checkpoints
from worker.context import WorkerContext
from worker.runner import _JobReporter
from worker.training.base import TrainEvent


def _job_with_checkpoints(db, settings, tmp_path, steps) -> tuple[str, Path, dict[int, Path]]:
    """A job of tenant-a with a checkpoint directory (holding a weights file) per step, as the trainer writes them."""
    tenant_id = tenant_id_of(db, "tenant-a")
    with db.transaction() as s:
        job_id = s.get(Adapter, insert_adapter(db, tenant_id, write_adapter_files(tmp_path / "adapter"))).job_id
    job_dir = settings.resolved_artifact_dir / "jobs" / job_id
    dirs = {}
    with db.transaction() as s:
        for step in steps:
            dirs[step] = job_dir / "checkpoints" / f"checkpoint-{step}"
            dirs[step].mkdir(parents=True)
            (dirs[step] / "adapter_model.safetensors").write_bytes(b"w" * 64)
            s.add(Checkpoint(job_id=job_id, step=step, epoch=float(step), path=str(dirs[step])))
    return job_id, job_dir, dirs


def _running(db, job_id: str, owner: str = "worker-1") -> SimpleNamespace:
    """The job marked running by ``owner``, and that owner's heartbeat as the reporter sees it."""
    with db.transaction() as s:
        job = s.get(FinetuneJob, job_id)
        job.status, job.owner = "running", owner
    return SimpleNamespace(owner=owner, lost=threading.Event())


def _stored_steps(db, job_id: str) -> list[int]:
    with db.transaction() as s:
        return [c.step for c in repo.list_checkpoints(s, job_id)]


def test_only_the_newest_are_kept(db, settings, auth, tmp_path):
    job_id, job_dir, dirs = _job_with_checkpoints(db, settings, tmp_path, [10, 20, 30, 40, 50])
    assert prune_checkpoints(db, job_id, 3, job_dir) == [10, 20]
    assert _stored_steps(db, job_id) == [30, 40, 50]
    assert [step for step, path in dirs.items() if path.exists()] == [30, 40, 50]
    assert prune_checkpoints(db, job_id, 3, job_dir) == []  # nothing more to prune


def test_a_checkpoint_an_adapter_comes_from_is_never_pruned(db, settings, auth, tmp_path):
    job_id, job_dir, dirs = _job_with_checkpoints(db, settings, tmp_path, [1, 2, 3])
    with db.transaction() as s:
        job = s.get(FinetuneJob, job_id)
        oldest = repo.get_checkpoint(s, job_id, 1)
        s.add(Adapter(tenant_id=job.tenant_id, job_id=job_id, prompt_set_id=job.prompt_set_id,
                      base_model=job.base_model, method="openai", kind="openai",
                      remote_model="ft:gpt-4o-mini:org::ckpt-step-1", checkpoint_id=oldest.id))
    assert prune_checkpoints(db, job_id, 1, job_dir) == [2]
    assert _stored_steps(db, job_id) == [1, 3]
    assert dirs[1].exists() and not dirs[2].exists() and dirs[3].exists()


def test_files_outside_the_jobs_directory_are_left_alone(db, settings, auth, tmp_path):
    job_id, job_dir, dirs = _job_with_checkpoints(db, settings, tmp_path, [1, 2])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with db.transaction() as s:
        repo.get_checkpoint(s, job_id, 1).path = str(elsewhere)
    assert prune_checkpoints(db, job_id, 1, job_dir) == [1]
    assert _stored_steps(db, job_id) == [2] and elsewhere.is_dir() and dirs[2].exists()


def test_the_runner_prunes_as_the_trainer_reports_checkpoints(db, settings, auth, tmp_path):
    """The trainer's checkpoint events, as a six-epoch job sends them: at most keep_checkpoints stay."""
    job_id, job_dir, _ = _job_with_checkpoints(db, settings, tmp_path, [])
    reporter = _JobReporter(WorkerContext(settings.model_copy(update={"keep_checkpoints": 2}), db), job_id,
                            beat=_running(db, job_id))
    saved = []
    for epoch in range(1, 7):
        saved.append(job_dir / "checkpoints" / f"checkpoint-{epoch * 4}")
        saved[-1].mkdir(parents=True)
        reporter.on_event(TrainEvent("checkpoint", f"checkpoint at step {epoch * 4}", step=epoch * 4, total_steps=24,
                                     epoch=float(epoch), path=str(saved[-1])))
    assert _stored_steps(db, job_id) == [20, 24]
    assert [path.name for path in saved if path.exists()] == ["checkpoint-20", "checkpoint-24"]


def test_a_worker_that_lost_its_job_writes_nothing_more(db, settings, auth, tmp_path):
    """Re-queued as stale and claimed by another worker: the old run's events, progress and checkpoints
    are dropped (the new owner's stay as they are), and the old run is told to stop."""
    job_id, job_dir, _ = _job_with_checkpoints(db, settings, tmp_path, [])
    old = _running(db, job_id, owner="worker-old")
    reporter = _JobReporter(WorkerContext(settings, db), job_id, beat=old)
    reporter.on_event(TrainEvent("metrics", "step 3", step=3, total_steps=24, loss=2.5))
    with db.transaction() as s:
        s.get(FinetuneJob, job_id).owner = "worker-new"
        events_before = len(repo.events_after(s, job_id, 0, 1000))
    checkpoint = job_dir / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    reporter.on_event(TrainEvent("metrics", "step 4", step=4, total_steps=24, loss=9.9))
    reporter.on_event(TrainEvent("checkpoint", "checkpoint at step 4", step=4, total_steps=24, epoch=1.0,
                                 path=str(checkpoint)))
    with db.transaction() as s:
        job = s.get(FinetuneJob, job_id)
        assert (job.step, job.metrics["loss"], job.owner) == (3, 2.5, "worker-new")
        assert len(repo.events_after(s, job_id, 0, 1000)) == events_before
    assert _stored_steps(db, job_id) == [] and old.lost.is_set() and reporter.should_stop()
