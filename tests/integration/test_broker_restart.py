"""The broker (Redis) killed and started again under a running Celery worker: the job it was running
finishes once, and the worker takes new jobs from the restarted broker without being restarted.

The Redis server is a private one (its own port, no persistence, so the restart also loses every
message it held), never the shared one other tests use.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import POSTGRES_URL, fresh_postgres_database
from tests.integration.test_db_restart import free_port
from tests.integration.test_distributed import KEEP_ALL, Cluster, running_cluster, small_csv

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# Enough steps that the job still runs when the broker comes back; no checkpoint, nothing to resume.
STEPS = {"lora_r": 4, "lora_alpha": 8, "batch_size": 2, "max_seq_length": 64, "allow_truncation": True,
         "max_steps": 12, "num_epochs": 1, "eval_each_epoch": False, "checkpoint_each_epoch": False}


@dataclass
class PrivateRedis:
    """A redis-server owned by this test: started, SIGKILLed and started again on one port."""

    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=(self.root / "redis.log").open("a"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                assert self.process.poll() is None, (self.root / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def broker(tmp_path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not found")
    server = PrivateRedis(tmp_path, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cluster(broker, tmp_path, cache_dir) -> Iterator[Cluster]:
    """The API in this process and its database; workers start in the test, on the private broker."""
    url = fresh_postgres_database(f"{POSTGRES_URL.rpartition('/')[2]}_broker_restart")
    with running_cluster(url, broker.url, tmp_path, cache_dir, "lab-b") as running:
        yield running


def test_a_running_job_finishes_once_and_the_worker_takes_jobs_after_the_restart(cluster, broker):
    worker = cluster.start_worker("survivor", beat=True)
    r = cluster.client.post("/datasets", headers=cluster.headers,
                            files={"file": ("small.csv", small_csv(), "text/csv")})
    assert r.status_code == 201, r.text
    job = cluster.post("/finetune-jobs", {"dataset_id": r.json()["id"], "method": "qlora", "hyperparameters": STEPS},
                       expect=201)
    cluster.wait("a training step", lambda: cluster.get(f"/finetune-jobs/{job['id']}")["step"] >= 1, timeout=300)

    broker.kill()
    time.sleep(1)  # the worker's consumer notices the dropped connection and starts retrying
    broker.start()
    during = cluster.get(f"/finetune-jobs/{job['id']}")
    assert during["status"] == "running", "the job ended before the broker came back; give it more steps"

    done = cluster.wait("the job", cluster.job_status(job["id"], "succeeded", "failed"), timeout=600)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["step"] == done["total_steps"] == STEPS["max_steps"]
    assert [a["job_id"] for a in cluster.get("/adapters")["data"]] == [job["id"]]
    events = cluster.get(f"/finetune-jobs/{job['id']}/events?limit=500")["data"]
    assert [e["message"] for e in events if e["message"].startswith("attempt ")] == ["attempt 1"]
    assert worker.process.poll() is None

    gen = cluster.post("/generate", {"adapter_id": done["adapter_id"], "label": "impaired", "n": 2, "max_tokens": 8,
                                     "seed": 3, "filters": KEEP_ALL}, expect=202)
    generated = cluster.wait("a generation sent after the restart",
                             cluster.generation_status(gen["id"], "succeeded", "failed"), timeout=300)
    assert generated["status"] == "succeeded" and generated["done"] == 2, generated["error"]
    assert sorted(s["index"] for s in cluster.samples(gen["corpus_id"])) == [0, 1]
    assert worker.process.poll() is None
