"""Distributed mode with real processes: the API sends job ids through real Redis to real Celery
worker subprocesses (`synthaug worker`), on a Postgres database of its own. Workers are killed with
SIGKILL mid-job, tasks are delivered twice, two workers race for one job, jobs are cancelled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from app.db.migrate import upgrade
from app.db.models import FinetuneJob
from app.db.session import Database
from app.main import create_app
from app.settings import Settings
from tests.conftest import EXAMPLE_CSV, TEST_PEPPER, fresh_postgres_database, make_key
from worker.celery_app import CeleryQueue, create_celery

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

REDIS_URL = os.environ.get("SYNTHAUG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SYNTHAUG = Path(sys.executable).parent / "synthaug"
# Two epochs of a small data set with a checkpoint after each: a kill in the second epoch resumes from the first.
EPOCHS = {"lora_r": 4, "lora_alpha": 8, "batch_size": 2, "max_seq_length": 64, "allow_truncation": True,
          "num_epochs": 2, "eval_each_epoch": False, "checkpoint_each_epoch": True}
KEEP_ALL = {"keep_truncated": True, "min_words": 0, "degenerate": False, "memorization_ngram": None, "dedupe": False,
            "label_consistency": False}
SAMPLING = {"temperature": 0.9, "top_p": 0.95, "top_k": 40, "max_tokens": 40, "seed": 11, "batch_size": 2,
            "filters": KEEP_ALL}


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log_path: Path

    def log_records(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (SYNTHAUG_LOG_FORMAT=json), parsed."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: nothing runs any cleanup."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    """The API in this process, workers in subprocesses, one database and one Redis db shared."""

    settings: Settings
    env: dict[str, str]
    client: TestClient
    headers: dict[str, str]
    db: Database
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str, queues: str = "train,generate,default", beat: bool = False,
                     **env: str) -> Worker:
        log_path = self.tmp / f"worker-{name}-{len(self.workers)}.log"
        cmd = [str(SYNTHAUG), "worker", "--queues", queues, "--name", f"{name}@%h"] + (["--beat"] if beat else [])
        process = subprocess.Popen(cmd, env={**self.env, **env}, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        return worker

    def get(self, path: str) -> dict[str, Any]:
        r = self.client.get(path, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: dict[str, Any] | None = None, expect: int = 200) -> dict[str, Any]:
        r = self.client.post(path, headers=self.headers, json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for worker in self.workers:
                assert worker.process.poll() is None or worker.process.returncode in (-9, -15, 0), (
                    f"worker {worker.name} exited with {worker.process.returncode}:\n"
                    + worker.log_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.name}\n{w.log_path.read_text()[-2000:]}" for w in self.workers)
                raise AssertionError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.2)

    def job_status(self, job_id: str, *statuses: str) -> Callable[[], dict | None]:
        def check():
            job = self.get(f"/finetune-jobs/{job_id}")
            return job if job["status"] in statuses else None
        return check

    def generation_status(self, generation_id: str, *statuses: str) -> Callable[[], dict | None]:
        def check():
            gen = self.get(f"/generations/{generation_id}")
            return gen if gen["status"] in statuses else None
        return check

    def samples(self, corpus_id: str) -> list[dict[str, Any]]:
        rows, cursor = [], None
        while True:
            page = self.get(f"/corpora/{corpus_id}/samples?limit=200&status=all" + (f"&cursor={cursor}" if cursor else ""))
            rows += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return rows


def small_csv() -> bytes:
    """The first 12 participants of each label of the example data (splits by the service's seeded split)."""
    rows = list(csv.DictReader(EXAMPLE_CSV.open()))
    picked = [r for label in ("0", "1") for r in [r for r in rows if r["label"] == label][:12]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "text", "label"])
    writer.writeheader()
    writer.writerows(picked)
    return out.getvalue().encode()


@contextmanager
def running_cluster(url: str, broker_url: str, root: Path, cache_dir: Path, tenant: str) -> Iterator[Cluster]:
    """The API in this process on database ``url`` and broker ``broker_url``; workers start in the test."""
    upgrade(url)
    env_settings = {
        "SYNTHAUG_ENV": "test", "SYNTHAUG_KEY_PEPPER": TEST_PEPPER, "SYNTHAUG_DATA_DIR": str(root / "data"),
        "SYNTHAUG_CACHE_DIR": str(cache_dir), "SYNTHAUG_DATABASE_URL": url, "SYNTHAUG_BROKER_URL": broker_url,
        "SYNTHAUG_HEARTBEAT_INTERVAL_S": "0.5", "SYNTHAUG_STALE_AFTER_S": "4", "SYNTHAUG_REAPER_INTERVAL_S": "1",
        "SYNTHAUG_REPORT_ON_GENERATION": "false", "SYNTHAUG_LOG_FORMAT": "json",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAUG_")} | env_settings
    settings = Settings(**{k.removeprefix("SYNTHAUG_").lower(): v for k, v in env_settings.items()})
    db = Database.of(settings, CeleryQueue(create_celery(settings)))
    headers = {"Authorization": f"Bearer {make_key(db, settings, tenant)}"}
    with TestClient(create_app(settings, db=db)) as client:
        running = Cluster(settings, env, client, headers, db, root)
        try:
            yield running
        finally:
            for worker in running.workers:
                worker.stop()
            db.dispose()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cache_dir) -> Iterator[Cluster]:
    url = fresh_postgres_database("synthaug_distributed_test")
    redis.Redis.from_url(REDIS_URL).flushdb()
    with running_cluster(url, REDIS_URL, tmp_path_factory.mktemp("distributed"), cache_dir, "lab-a") as running:
        yield running


@pytest.fixture(autouse=True)
def _stop_workers(cluster) -> Iterator[None]:
    """Each test starts the workers it needs and leaves none behind, nor any message."""
    yield
    for worker in cluster.workers:
        worker.stop()
    cluster.workers.clear()
    redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.fixture(scope="module")
def dataset_id(cluster) -> str:
    r = cluster.client.post("/datasets", headers=cluster.headers, files={"file": ("small.csv", small_csv(), "text/csv")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_finetune(cluster: Cluster, dataset_id: str, **hyperparameters) -> dict[str, Any]:
    return cluster.post("/finetune-jobs", {"dataset_id": dataset_id, "method": "qlora",
                                           "hyperparameters": {**EPOCHS, **hyperparameters}}, expect=201)


@pytest.fixture(scope="module")
def killed_and_resumed(cluster, dataset_id) -> dict[str, Any]:
    """A two-epoch fine-tune whose worker is SIGKILLed in the second epoch, then finished by another."""
    first = cluster.start_worker("first")
    job = start_finetune(cluster, dataset_id)
    checkpoint = cluster.wait("the first epoch's checkpoint",
                              lambda: cluster.get(f"/finetune-jobs/{job['id']}/checkpoints")["data"], timeout=600)
    step_at_checkpoint = checkpoint[-1]["step"]
    cluster.wait("a step of the second epoch", lambda: cluster.get(f"/finetune-jobs/{job['id']}")["step"]
                 > step_at_checkpoint, timeout=300)
    first.kill()
    killed_at = cluster.get(f"/finetune-jobs/{job['id']}")
    second = cluster.start_worker("second", beat=True)
    done = cluster.wait("the resumed job", cluster.job_status(job["id"], "succeeded", "failed"), timeout=900)
    events = cluster.get(f"/finetune-jobs/{job['id']}/events?limit=500")["data"]
    first_records, second_records = first.log_records(), second.log_records()
    cluster.workers.remove(first)  # stopped already
    second.stop()
    return {"job": done, "killed_at": killed_at, "checkpoint_step": step_at_checkpoint, "events": events,
            "first_log": first_records, "second_log": second_records}


class TestFinetuneSurvivesSigkill:
    def test_the_job_resumes_from_its_last_checkpoint(self, killed_and_resumed):
        attempts = [e["data"] for e in killed_and_resumed["events"] if e["message"].startswith("attempt ")]
        assert [a["attempt"] for a in attempts] == [1, 2]
        assert attempts[0]["resumed_from_step"] is None
        assert attempts[1]["resumed_from_step"] == killed_and_resumed["checkpoint_step"] > 0
        assert killed_and_resumed["killed_at"]["status"] == "running"
        assert killed_and_resumed["killed_at"]["step"] > killed_and_resumed["checkpoint_step"]

    def test_the_reaper_sent_it_again_and_it_succeeded_with_one_adapter(self, cluster, killed_and_resumed):
        job = killed_and_resumed["job"]
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == 2 and job["adapter_id"]
        assert any("stopped (no heartbeat" in e["message"] and "sent again" in e["message"]
                   for e in killed_and_resumed["events"])
        adapters = [a for a in cluster.get("/adapters?limit=100")["data"] if a["job_id"] == job["id"]]
        assert len(adapters) == 1
        steps = [e["data"]["step"] for e in killed_and_resumed["events"] if e["kind"] == "metrics"]
        assert max(steps) == job["total_steps"] == job["step"]

    def test_worker_logs_are_json_lines_carrying_the_job_id(self, killed_and_resumed):
        job_id = killed_and_resumed["job"]["id"]
        for attempt, records in enumerate((killed_and_resumed["first_log"], killed_and_resumed["second_log"]), 1):
            mine = [r for r in records if r.get("job_id") == job_id]
            assert mine and all(r["task"] == "finetune.run" and r["level"] and r["ts"] for r in mine)
            assert attempt in {r.get("attempt") for r in mine}  # records of the claimed run carry its attempt


def generate(cluster: Cluster, adapter_id: str, n: int, **extra) -> dict[str, Any]:
    return cluster.post("/generate", {"adapter_id": adapter_id, "label": "impaired", "n": n, **SAMPLING, **extra},
                        expect=202)


def by_index(samples: list[dict[str, Any]]) -> dict[int, str]:
    return {s["index"]: s["text"] for s in samples}


class TestGeneration:
    def test_a_generation_through_a_worker_stores_exactly_n_samples(self, cluster, killed_and_resumed):
        cluster.start_worker("gen")
        gen = generate(cluster, killed_and_resumed["job"]["adapter_id"], 6)
        done = cluster.wait("the generation", cluster.generation_status(gen["id"], "succeeded", "failed"))
        assert done["status"] == "succeeded" and done["done"] == 6
        samples = cluster.samples(gen["corpus_id"])
        assert sorted(s["index"] for s in samples) == list(range(6))
        assert cluster.get(f"/corpora/{gen['corpus_id']}")["counts"]["impaired"] == 6

    def test_sigkill_mid_generation_completes_with_the_same_texts(self, cluster, killed_and_resumed):
        adapter_id, n = killed_and_resumed["job"]["adapter_id"], 16
        worker = cluster.start_worker("reference")
        reference = generate(cluster, adapter_id, n)
        cluster.wait("the reference generation", cluster.generation_status(reference["id"], "succeeded"))
        worker.stop()

        first = cluster.start_worker("doomed")
        gen = generate(cluster, adapter_id, n)
        partial = cluster.wait("a stored chunk", lambda: (g := cluster.get(f"/generations/{gen['id']}"))["done"] >= 2
                               and g)
        first.kill()
        assert partial["done"] < n, "the generation finished before the kill; make it longer"
        cluster.start_worker("rescuer", beat=True)
        done = cluster.wait("the resumed generation", cluster.generation_status(gen["id"], "succeeded", "failed"),
                            timeout=600)
        assert done["status"] == "succeeded" and done["attempts"] == 2 and done["done"] == n
        samples = cluster.samples(gen["corpus_id"])
        assert sorted(s["index"] for s in samples) == list(range(n))
        assert by_index(samples) == by_index(cluster.samples(reference["corpus_id"]))


def refusals(worker: Worker, object_id: str) -> list[dict[str, Any]]:
    return [r for r in worker.log_records() if object_id in r.get("message", "") and "leaves it" in r["message"]]


class TestAtLeastOnceDelivery:
    def test_a_task_redelivered_while_it_runs_runs_once(self, cluster, killed_and_resumed):
        # Redis gives an unacknowledged task back after the visibility timeout: here 2 s, far less
        # than the generation takes, so the second worker receives it while the first runs it.
        short = {"SYNTHAUG_BROKER_VISIBILITY_TIMEOUT_S": "2"}
        one = cluster.start_worker("one", **short)
        gen = generate(cluster, killed_and_resumed["job"]["adapter_id"], 24)
        cluster.wait("the first worker's claim", cluster.generation_status(gen["id"], "running"))
        two = cluster.start_worker("two", **short)
        cluster.wait("the redelivery", lambda: refusals(two, gen["id"]) or refusals(one, gen["id"]), timeout=240)
        done = cluster.wait("the generation", cluster.generation_status(gen["id"], "succeeded", "failed"), timeout=600)
        assert done["status"] == "succeeded" and done["attempts"] == 1 and done["done"] == 24
        assert sorted(s["index"] for s in cluster.samples(gen["corpus_id"])) == list(range(24))

    def test_two_workers_racing_for_one_job_one_runs_it(self, cluster, killed_and_resumed):
        workers = [cluster.start_worker(name, queues="generate") for name in ("left", "right")]
        cluster.wait("both workers", lambda: all("ready" in w.log_path.read_text() for w in workers), timeout=120)
        gen = generate(cluster, killed_and_resumed["job"]["adapter_id"], 4)
        # The same message twice, as a broker may deliver it: both idle workers take one copy.
        create_celery(cluster.settings).send_task("generation.run", args=[gen["id"]], task_id=gen["id"],
                                                  queue="generate")
        done = cluster.wait("the generation", cluster.generation_status(gen["id"], "succeeded", "failed"))
        assert done["status"] == "succeeded" and done["attempts"] == 1
        cluster.wait("the other copy's refusal", lambda: sum(len(refusals(w, gen["id"])) for w in workers) == 1)
        ran = [w.name for w in workers if any(r.get("job_id") == gen["id"] and "received" in r["message"]
                                              for r in w.log_records()) and not refusals(w, gen["id"])]
        assert len(ran) == 1
        assert sorted(s["index"] for s in cluster.samples(gen["corpus_id"])) == list(range(4))


class TestCancel:
    def test_a_queued_job_is_cancelled_and_its_message_revoked(self, cluster, dataset_id):
        # A worker that does not consume `train` hears the revoke and hands it to the train worker
        # that starts later (mingle); the message is discarded without running.
        listener = cluster.start_worker("listener", queues="default")
        cluster.wait("the listener", lambda: "ready" in listener.log_path.read_text(), timeout=120)
        job = start_finetune(cluster, dataset_id, max_steps=1)
        cancelled = cluster.post(f"/finetune-jobs/{job['id']}/cancel")
        assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"]
        trainer = cluster.start_worker("trainer", queues="train")
        queue = redis.Redis.from_url(REDIS_URL)
        cluster.wait("the train queue to drain", lambda: "ready" in trainer.log_path.read_text()
                     and queue.llen("train") == 0, timeout=120)
        cluster.wait("the revoked message to be discarded",
                     lambda: f"Discarding revoked task: finetune.run[{job['id']}]" in trainer.log_path.read_text())
        assert not [r for r in trainer.log_records() if r.get("job_id") == job["id"] and r["logger"] == "worker.tasks"]
        job = cluster.get(f"/finetune-jobs/{job['id']}")
        assert job["status"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None

    def test_a_running_job_stops_between_steps(self, cluster, dataset_id):
        cluster.start_worker("runner", queues="train")
        job = start_finetune(cluster, dataset_id, num_epochs=20)
        cluster.wait("a training step", lambda: cluster.get(f"/finetune-jobs/{job['id']}")["step"] >= 1, timeout=300)
        assert cluster.post(f"/finetune-jobs/{job['id']}/cancel")["cancel_requested"]
        done = cluster.wait("the cancel", cluster.job_status(job["id"], "cancelled", "succeeded", "failed"))
        assert done["status"] == "cancelled" and done["adapter_id"] is None
        assert done["step"] < done["total_steps"]

    def test_a_running_generation_stops_before_its_next_chunk(self, cluster, killed_and_resumed):
        cluster.start_worker("sampler", queues="generate")
        gen = generate(cluster, killed_and_resumed["job"]["adapter_id"], 40)
        cluster.wait("a stored chunk", lambda: cluster.get(f"/generations/{gen['id']}")["done"] >= 2)
        assert cluster.post(f"/generations/{gen['id']}/cancel")["cancel_requested"]
        done = cluster.wait("the cancel", cluster.generation_status(gen["id"], "cancelled", "succeeded", "failed"))
        assert done["status"] == "cancelled" and 2 <= done["done"] < 40
        assert len(cluster.samples(gen["corpus_id"])) == done["candidates"]


def test_the_database_row_is_the_truth_the_queue_carries_only_ids(cluster, dataset_id):
    """What a message holds: the task name and the object id, as JSON, on the task's queue."""
    job = start_finetune(cluster, dataset_id, max_steps=1)
    raw = redis.Redis.from_url(REDIS_URL).lrange("train", 0, -1)
    messages = [json.loads(m) for m in raw]
    mine = [m for m in messages if m["headers"]["id"] == job["id"]]
    assert len(mine) == 1
    assert mine[0]["headers"]["task"] == "finetune.run" and mine[0]["content-type"] == "application/json"
    with cluster.db.transaction() as s:
        assert s.get(FinetuneJob, job["id"]).status == "queued"
    cluster.post(f"/finetune-jobs/{job['id']}/cancel")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_a_broker_runs_the_api_only_and_sends_jobs_to_the_queue(cluster, dataset_id):
    """`synthaug serve` as its own process in distributed mode: ready (database and broker), a job it
    accepts goes to the train queue, and nothing in the API process runs it."""
    port = free_port()
    log_path = cluster.tmp / "serve.log"
    process = subprocess.Popen([str(SYNTHAUG), "serve", "--port", str(port)], env=cluster.env,
                               stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            try:
                return httpx.get(f"{base}/readyz", timeout=2).json()
            except httpx.HTTPError:
                assert process.poll() is None, log_path.read_text()
                return None
        assert cluster.wait("the API", ready, timeout=120)["checks"] == {"database": "ok", "broker": "ok"}
        r = httpx.post(f"{base}/finetune-jobs", headers=cluster.headers, timeout=30,
                       json={"dataset_id": dataset_id, "method": "qlora", "hyperparameters": {**EPOCHS, "max_steps": 1}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        queued = [json.loads(m)["headers"]["id"] for m in redis.Redis.from_url(REDIS_URL).lrange("train", 0, -1)]
        assert queued == [job_id]
        time.sleep(2)
        assert cluster.get(f"/finetune-jobs/{job_id}")["status"] == "queued"  # no in-process runner
        assert "API key for tenant" not in log_path.read_text()  # nor the embedded start-up
        cluster.post(f"/finetune-jobs/{job_id}/cancel")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
