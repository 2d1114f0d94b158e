"""Adapters and their disk: a volume that fills while a fine-tune writes its adapter, and an adapter
directory damaged after training.

The full disk is real: a small tmpfs mounted as the artifact directory (the tests run as root here and
in CI), so the writes of the trainer, safetensors and torch meet ENOSPC from the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
from sqlalchemy import func, select

from app.db.models import Adapter, Checkpoint
from app.domain.sampling import SamplingParams
from app.settings import Settings
from tests.conftest import EXAMPLE_CSV, TEST_PEPPER, embedded_stack
from tests.worker.test_vllm_client import fake, fake_server, settings_for  # noqa: F401 (fixtures)
from worker.artifacts import DiskFull, reporting_disk_full
from worker.models import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_problem
from worker.sampling.base import SampleRequest, SamplerError, SampleTarget
from worker.sampling.vllm import VLLMSampler

pytestmark = pytest.mark.slow

VOLUME_BYTES = 64 * 1024 * 1024
# One step with a checkpoint: the job writes a checkpoint, then its adapter.
ONE_STEP = {"lora_r": 4, "lora_alpha": 8, "max_steps": 1, "batch_size": 2, "max_seq_length": 256, "num_epochs": 1,
            "checkpoint_each_epoch": True, "eval_each_epoch": False}
KEEP_ALL = {"keep_truncated": True, "min_words": 0, "degenerate": False, "memorization_ngram": None, "dedupe": False,
            "label_consistency": False}


@contextmanager
def small_volume(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path``: writes beyond its free space fail with ENOSPC."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as a small volume here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Iterator[Path]:
    with small_volume(tmp_path_factory.mktemp("artifacts"), VOLUME_BYTES) as path:
        yield path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, cache_dir, volume):
    """The embedded service on SQLite with its artifacts on the small volume."""
    data_dir = tmp_path_factory.mktemp("faults")
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir,
                        database_url=f"sqlite:///{data_dir / 'faults.db'}", artifact_dir=volume,
                        report_on_generation=False)
    with embedded_stack(settings, "fault-tenant") as running:
        yield running


def get(stack, path: str) -> dict:
    r = stack.client.get(path, headers=stack.headers)
    assert r.status_code == 200, r.text
    return r.json()


def finetune(stack, dataset_id: str) -> dict:
    r = stack.client.post("/finetune-jobs", headers=stack.headers,
                          json={"dataset_id": dataset_id, "method": "qlora", "hyperparameters": ONE_STEP})
    assert r.status_code == 201, r.text
    assert stack.runner.join(timeout=900)
    return get(stack, f"/finetune-jobs/{r.json()['id']}")


def used_bytes(directory: Path) -> int:
    """Bytes a directory's files take on the volume (whole blocks, as the volume counts them)."""
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@pytest.fixture(scope="module")
def jobs(stack, volume) -> dict:
    """A job that fits, then the same job with room for its checkpoint and half its adapter, then with
    room for half its checkpoint."""
    r = stack.client.post("/datasets", headers=stack.headers,
                          files={"file": ("a.csv", EXAMPLE_CSV.read_bytes(), "text/csv")})
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    fitted = finetune(stack, dataset_id)
    assert fitted["status"] == "succeeded", fitted["error"]
    job_dir = volume / "jobs" / fitted["id"]
    checkpoint_bytes, adapter_bytes = used_bytes(job_dir / "checkpoints"), used_bytes(job_dir / "adapter")
    with open(volume / "filler", "wb") as filler:
        os.posix_fallocate(filler.fileno(), 0, free_bytes(volume) - checkpoint_bytes - adapter_bytes // 2)
    try:
        starved = finetune(stack, dataset_id)
    finally:
        (volume / "filler").unlink()
    with open(volume / "filler", "wb") as filler:
        os.posix_fallocate(filler.fileno(), 0, free_bytes(volume) - checkpoint_bytes // 2)
    try:
        checkpoint_starved = finetune(stack, dataset_id)
    finally:
        (volume / "filler").unlink()
    return {"fitted": fitted, "starved": starved, "dir": volume / "jobs" / starved["id"],
            "checkpoint_starved": checkpoint_starved}


class TestDiskFullWhileWritingTheAdapter:
    def test_the_job_fails_saying_the_disk_is_full_without_a_server_path(self, jobs, volume):
        starved = jobs["starved"]
        assert starved["status"] == "failed"
        assert "no space left on the artifact volume while writing the adapter" in starved["error"]
        assert str(volume) not in starved["error"] and "/tmp" not in starved["error"]

    def test_no_adapter_is_registered_and_no_partial_directory_is_left(self, stack, jobs):
        starved = jobs["starved"]
        assert starved["adapter_id"] is None
        assert [a["job_id"] for a in get(stack, "/adapters")["data"]] == [jobs["fitted"]["id"]]
        with stack.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Adapter).where(Adapter.job_id == starved["id"])) == 0
        assert sorted(p.name for p in jobs["dir"].iterdir()) == ["checkpoints"]

    def test_the_checkpoint_written_before_is_registered_and_whole(self, stack, jobs):
        with stack.db.transaction() as s:
            checkpoints = s.scalars(select(Checkpoint).where(Checkpoint.job_id == jobs["starved"]["id"])).all()
        assert [c.step for c in checkpoints] == [1]
        saved = Path(checkpoints[0].path)
        assert adapter_problem(saved) is None
        assert json.loads((saved / "trainer_state.json").read_text())["global_step"] == 1


class TestDiskFullWhileWritingACheckpoint:
    def test_the_job_fails_and_the_half_written_checkpoint_is_removed(self, stack, jobs, volume):
        """The trainer wrote part of checkpoint-1 before the volume filled: the job fails saying so, and
        neither that directory (which held the space a retry needs) nor a row naming it is left."""
        starved = jobs["checkpoint_starved"]
        assert starved["status"] == "failed"
        assert "no space left on the artifact volume while writing a checkpoint" in starved["error"]
        job_dir = volume / "jobs" / starved["id"]
        assert list((job_dir / "checkpoints").glob("checkpoint-*")) == []
        assert not (job_dir / "adapter").exists() and starved["adapter_id"] is None
        with stack.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Checkpoint)
                            .where(Checkpoint.job_id == starved["id"])) == 0

    def test_torch_save_on_a_full_volume_is_reported_as_a_full_disk(self, tmp_path):
        """torch.save, which writes a checkpoint's optimizer state, says only "unexpected pos" on ENOSPC."""
        with small_volume(tmp_path, 1024 * 1024), pytest.raises(DiskFull, match="while writing a checkpoint"):
            with reporting_disk_full("a checkpoint", tmp_path / "jobs" / "job"):
                torch.save({"exp_avg": torch.ones(512, 1024)}, tmp_path / "optimizer.pt")

    def test_another_failure_is_left_as_it_is(self, tmp_path):
        with pytest.raises(RuntimeError, match="^unexpected pos"):
            with reporting_disk_full("a checkpoint", tmp_path):
                raise RuntimeError("unexpected pos 576 vs 534")


def damage(adapter_dir: Path, how: str) -> None:
    if how == "truncated weights":
        weights = adapter_dir / ADAPTER_WEIGHTS
        os.truncate(weights, weights.stat().st_size // 2)
    elif how == "missing config":
        (adapter_dir / ADAPTER_CONFIG).unlink()
    else:
        (adapter_dir / ADAPTER_CONFIG).write_text('{"peft_type": "LORA", "r": ')


DAMAGES = {
    "truncated weights": f"{ADAPTER_WEIGHTS} is truncated or not a safetensors file",
    "missing config": f"{ADAPTER_CONFIG} is missing",
    "invalid config": f"{ADAPTER_CONFIG} is not valid JSON",
}


@pytest.fixture
def damaged(stack, jobs, request, tmp_path) -> Iterator[tuple[str, str]]:
    """The fitted job's adapter, damaged as the test names, restored afterwards."""
    adapter_id = jobs["fitted"]["adapter_id"]
    with stack.db.transaction() as s:
        adapter_dir = Path(s.get(Adapter, adapter_id).path)
    shutil.copytree(adapter_dir, tmp_path / "intact")
    damage(adapter_dir, request.param)
    try:
        yield adapter_id, DAMAGES[request.param]
    finally:
        shutil.rmtree(adapter_dir)
        shutil.copytree(tmp_path / "intact", adapter_dir)


@pytest.mark.parametrize("damaged", list(DAMAGES), indirect=True)
class TestDamagedAdapter:
    def test_the_hf_generation_fails_naming_the_adapter_and_the_damage(self, stack, damaged):
        adapter_id, problem = damaged
        r = stack.client.post("/generate", headers=stack.headers, json={
            "adapter_id": adapter_id, "label": "impaired", "n": 2, "max_tokens": 8, "filters": KEEP_ALL})
        assert r.status_code == 202, r.text
        assert stack.runner.join(timeout=300)
        done = get(stack, f"/generations/{r.json()['id']}")
        assert done["status"] == "failed"
        assert done["error"].startswith(f"SamplerError: adapter {adapter_id} cannot be loaded: {problem}")
        assert "Traceback" not in done["error"] and "/" not in done["error"]

    def test_the_vllm_sampler_refuses_it_before_asking_the_server(
        self, stack, damaged, fake, tmp_path, cache_dir  # noqa: F811 (the fake vLLM server fixture)
    ):
        adapter_id, problem = damaged
        with stack.db.transaction() as s:
            adapter = s.get(Adapter, adapter_id)
            target = SampleTarget(adapter.id, Path(adapter.path), adapter.base_model, "nf4")
        sampler = VLLMSampler(settings_for(fake.url, tmp_path, cache_dir))
        request = SampleRequest.of([{"role": "user", "content": "Describe the picture."}], 1)
        with pytest.raises(SamplerError, match=f"^adapter {adapter_id} cannot be loaded: {problem}"):
            sampler.sample(target, [request], SamplingParams(max_tokens=8))
        assert fake.loads == [] and fake.completions == []
