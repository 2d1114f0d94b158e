"""OpenAI fine-tunes end to end through the embedded runner, against a fake OpenAI API on loopback
(the real `openai` SDK, payloads shaped like the real API): the job driven and mirrored, a remote
failure, cancel, a worker restart mid-poll, rate limits, and generations that call the fine-tuned model.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from app.db.base import utcnow
from app.db.models import FinetuneJob, Sample
from app.settings import Settings
from tests.api.factories import balanced_rows, csv_bytes, make_text
from tests.conftest import TEST_PEPPER, Stack, embedded_stack, fresh_postgres_database
from tests.fakes.openai_api import FakeOpenAI, running_fake_openai
from worker.openai_jobs import run_openai_finetune

BASE = "gpt-4o-mini-2024-07-18"
TEST_MARKER = "zebrafish"
# Filters that keep whatever the fake writes: these tests are about the plumbing, not the texts.
KEEP_ALL = {"keep_truncated": True, "min_words": 0, "degenerate": False, "memorization_ngram": None, "dedupe": False,
            "label_consistency": False}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai(steps=6) as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory, cache_dir, fake) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("openai")
    url = (f"sqlite:///{data_dir / 'openai.db'}" if request.param == "sqlite"
           else fresh_postgres_database("synthaug_openai_test"))
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir, database_url=url,
                        report_on_generation=False, openai_api_key=fake.api_key, openai_base_url=fake.base_url,
                        openai_poll_min_s=0.02, openai_poll_max_s=0.1, openai_max_retries=3,
                        heartbeat_interval_s=0.2, stale_after_s=2)
    with embedded_stack(settings, "openai-tenant") as running:
        yield running


@pytest.fixture(autouse=True)
def _reset_fake(fake) -> Iterator[None]:
    yield
    fake.options.advance_on_retrieve, fake.options.fail_at_tick = True, None


@pytest.fixture(scope="module")
def dataset_id(stack) -> str:
    rows = balanced_rows(15, splits=["train", "train", "train", "train", "validation"])
    # Held-out speakers whose transcripts carry a word no other has: it must never reach OpenAI.
    rows += [[f"T{i:03d}", f"{make_text(30 + i)} The {TEST_MARKER} swims by.", i % 2, "test"] for i in range(4)]
    r = stack.client.post("/datasets", headers=stack.headers,
                          files={"file": ("thirty.csv", csv_bytes(rows, header=("id", "text", "label", "split")))})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def get(stack: Stack, path: str) -> Any:
    r = stack.client.get(path, headers=stack.headers)
    assert r.status_code == 200, r.text
    return r.json()


def start(stack: Stack, dataset_id: str, **hyperparameters) -> dict:
    r = stack.client.post("/finetune-jobs", headers=stack.headers, json={
        "dataset_id": dataset_id, "method": "openai", "seed": 7,
        "hyperparameters": {"n_epochs": 3, "suffix": "pilot", **hyperparameters}})
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(what: str, check, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def held_remote_job(stack: Stack, dataset_id: str, fake: FakeOpenAI) -> tuple[dict, str]:
    """A job whose remote job exists and moves only when the test advances it."""
    fake.options.advance_on_retrieve = False
    job = start(stack, dataset_id)
    return job, wait_for("the remote job", lambda: get(stack, f"/finetune-jobs/{job['id']}")["remote"].get("job_id"))


def running_remote_job(stack: Stack, dataset_id: str, fake: FakeOpenAI) -> tuple[dict, str]:
    """A held job, advanced to running at OpenAI and mirrored as running here."""
    job, remote_id = held_remote_job(stack, dataset_id, fake)
    fake.advance(remote_id, 3)
    wait_for("running", lambda: get(stack, f"/finetune-jobs/{job['id']}")["status"] == "running")
    return job, remote_id


def events(stack: Stack, job_id: str) -> list[dict]:
    return get(stack, f"/finetune-jobs/{job_id}/events?limit=500")["data"]


@pytest.fixture(scope="module")
def succeeded(stack, dataset_id, fake) -> dict:
    job = start(stack, dataset_id)
    assert stack.runner.join(timeout=120)
    return get(stack, f"/finetune-jobs/{job['id']}")


class TestSuccess:
    def test_the_job_walks_the_remote_status_sequence_and_succeeds(self, stack, succeeded):
        assert succeeded["status"] == "succeeded", succeeded["error"]
        statuses = [e["data"]["remote_status"] for e in events(stack, succeeded["id"]) if "remote_status" in e["data"]]
        assert statuses == ["validating_files", "queued", "running", "succeeded"]

    def test_the_uploaded_files_are_the_splits_as_chat_jsonl(self, succeeded, fake):
        remote = fake.job(succeeded["remote"]["job_id"])
        train, validation = fake.file_jsonl(remote["training_file"]), fake.file_jsonl(remote["validation_file"])
        assert (len(train), len(validation)) == (24, 6)
        assert all([m["role"] for m in ex["messages"]] == ["system", "user", "assistant"] for ex in train + validation)
        assert {ex["messages"][2]["content"] for ex in train}.isdisjoint({ex["messages"][2]["content"] for ex in validation})
        assert not any(TEST_MARKER in m["content"] for ex in train + validation for m in ex["messages"])

    def test_the_remote_job_is_created_once_with_the_supervised_method(self, succeeded, fake):
        creates = [r for r in fake.requests_to("/fine_tuning/jobs", "POST") if r.path == "/v1/fine_tuning/jobs"]
        mine = [r for r in creates if r.json["metadata"].get("synthaug_job_id") == succeeded["id"]]
        assert len(mine) == 1
        body = mine[0].json
        assert (body["model"], body["seed"], body["suffix"]) == (BASE, 7, "pilot")
        assert body["method"]["type"] == "supervised"
        assert body["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
        assert "hyperparameters" not in body  # deprecated upstream

    def test_events_metrics_checkpoints_and_tokens_are_mirrored(self, stack, succeeded, fake):
        remote = fake.job(succeeded["remote"]["job_id"])
        metrics = [e for e in events(stack, succeeded["id"]) if e["kind"] == "metrics"]
        assert [e["data"]["step"] for e in metrics] == list(range(1, 7))
        assert all("train_loss" in e["data"] and "valid_loss" in e["data"] for e in metrics)
        assert (succeeded["step"], succeeded["total_steps"]) == (6, 6)
        assert succeeded["remote"]["trained_tokens"] == remote["trained_tokens"] > 0
        remote_checkpoints = fake.checkpoints(remote["id"])
        ours = get(stack, f"/finetune-jobs/{succeeded['id']}/checkpoints")["data"]
        assert [(c["step"], c["remote_model"]) for c in ours] == [
            (c["step_number"], c["fine_tuned_model_checkpoint"]) for c in remote_checkpoints]
        assert all("train_loss" in c["metrics"] for c in ours)

    def test_the_fine_tuned_model_and_each_checkpoint_model_are_adapters(self, stack, succeeded, fake):
        remote = fake.job(succeeded["remote"]["job_id"])
        adapters = [a for a in get(stack, "/adapters?limit=100")["data"] if a["job_id"] == succeeded["id"]]
        final = [a for a in adapters if a["checkpoint_id"] is None]
        assert [(a["kind"], a["remote_model"], a["id"]) for a in final] == [
            ("openai", remote["fine_tuned_model"], succeeded["adapter_id"])]
        assert sorted(a["remote_model"] for a in adapters if a["checkpoint_id"]) == sorted(
            c["fine_tuned_model_checkpoint"] for c in fake.checkpoints(remote["id"]))

    def test_the_api_key_is_never_stored_or_returned(self, stack, succeeded, fake):
        shown = json.dumps([get(stack, f"/finetune-jobs/{succeeded['id']}"), events(stack, succeeded["id"]),
                            get(stack, "/adapters?limit=100")])
        with stack.db.transaction() as s:
            stored = json.dumps([s.get(FinetuneJob, succeeded["id"]).remote, s.get(FinetuneJob, succeeded["id"]).hyperparameters])
        assert fake.api_key not in shown and fake.api_key not in stored


class TestGeneration:
    def test_it_calls_the_fine_tuned_model_and_never_the_base(self, stack, succeeded, fake):
        before = len(fake.requests_to("/chat/completions"))
        r = stack.client.post("/generate", headers=stack.headers, json={
            "adapter_id": succeeded["adapter_id"], "label": "impaired", "n": 4, "seed": 3, "max_tokens": 120,
            "temperature": 0.8, "top_p": 0.9, "filters": KEEP_ALL})
        assert r.status_code == 202, r.text
        assert r.json()["sampler"] == "openai"
        assert stack.runner.join(timeout=120)
        gen = get(stack, f"/generations/{r.json()['id']}")
        assert gen["status"] == "succeeded" and gen["done"] == 4, gen["error"]
        calls = fake.requests_to("/chat/completions")[before:]
        model = fake.job(succeeded["remote"]["job_id"])["fine_tuned_model"]
        assert calls and {c.json["model"] for c in calls} == {model} and BASE not in {c.json["model"] for c in calls}
        assert all(c.json["messages"][0]["role"] == "system" and c.json["temperature"] == 0.8 for c in calls)
        assert gen["usage"]["completion_tokens"] > 0 and gen["usage"]["system_fingerprints"]
        with stack.db.transaction() as s:
            provenance = s.scalars(select(Sample.provenance).where(Sample.generation_id == gen["id"])).all()
        assert all(p["remote_model"] == model and p["kind"] == "openai" and p["system_fingerprint"] for p in provenance)

    def test_a_checkpoint_model_can_be_sampled_too(self, stack, succeeded, fake):
        checkpoint = next(a for a in get(stack, "/adapters?limit=100")["data"]
                          if a["job_id"] == succeeded["id"] and a["checkpoint_id"])
        before = len(fake.requests_to("/chat/completions"))
        r = stack.client.post("/generate", headers=stack.headers, json={
            "adapter_id": checkpoint["id"], "label": "control", "n": 2, "filters": KEEP_ALL})
        assert r.status_code == 202 and stack.runner.join(timeout=120)
        assert get(stack, f"/generations/{r.json()['id']}")["status"] == "succeeded"
        assert {c.json["model"] for c in fake.requests_to("/chat/completions")[before:]} == {checkpoint["remote_model"]}


class TestFailureAndCancel:
    def test_a_remote_failure_fails_the_job_with_its_error(self, stack, dataset_id, fake):
        fake.options.fail_at_tick = 3
        job = start(stack, dataset_id)
        assert stack.runner.join(timeout=120)
        job = get(stack, f"/finetune-jobs/{job['id']}")
        assert job["status"] == "failed" and job["adapter_id"] is None
        assert "invalid_training_file" in job["error"] and "Example 3, message 2" in job["error"]
        assert "(param: training_file)" in job["error"] and job["remote"]["error"]["code"] == "invalid_training_file"

    def test_cancel_while_running_cancels_the_remote_job(self, stack, dataset_id, fake):
        job, remote_id = running_remote_job(stack, dataset_id, fake)
        assert stack.client.post(f"/finetune-jobs/{job['id']}/cancel", headers=stack.headers).json()["cancel_requested"]
        assert stack.runner.join(timeout=60)
        job = get(stack, f"/finetune-jobs/{job['id']}")
        assert job["status"] == "cancelled" and job["adapter_id"] is None
        assert fake.requests_to(f"/fine_tuning/jobs/{remote_id}/cancel", "POST")
        assert fake.job(remote_id)["status"] == "cancelled"

    def test_pause_and_resume_reach_the_remote_job(self, stack, dataset_id, fake):
        job, remote_id = running_remote_job(stack, dataset_id, fake)
        stack.client.post(f"/finetune-jobs/{job['id']}/pause", headers=stack.headers)
        wait_for("paused", lambda: get(stack, f"/finetune-jobs/{job['id']}")["status"] == "paused")
        stack.client.post(f"/finetune-jobs/{job['id']}/resume", headers=stack.headers)
        wait_for("running again", lambda: get(stack, f"/finetune-jobs/{job['id']}")["status"] == "running")
        fake.options.advance_on_retrieve = True
        assert stack.runner.join(timeout=60)
        assert get(stack, f"/finetune-jobs/{job['id']}")["status"] == "succeeded"


class TestRestartsAndRetries:
    def test_a_worker_restart_mid_poll_follows_the_same_remote_job(self, stack, dataset_id, fake):
        job, remote_id = held_remote_job(stack, dataset_id, fake)
        with stack.db.transaction() as s:  # the worker dies: another owner, a heartbeat long gone
            row = s.get(FinetuneJob, job["id"])
            row.owner, row.heartbeat_at = "a-dead-worker", utcnow() - timedelta(hours=1)
        assert stack.runner.join(timeout=30)  # the first driver sees it lost the job and stops
        fake.options.advance_on_retrieve = True
        assert job["id"] in stack.runner.recover()
        assert stack.runner.join(timeout=120)
        done = get(stack, f"/finetune-jobs/{job['id']}")
        assert done["status"] == "succeeded" and done["attempts"] == 2 and done["remote"]["job_id"] == remote_id
        creates = [r for r in fake.requests_to("/fine_tuning/jobs", "POST") if r.path == "/v1/fine_tuning/jobs"
                   and r.json["metadata"]["synthaug_job_id"] == job["id"]]
        assert len(creates) == 1

    def test_a_remote_job_whose_id_was_never_stored_is_found_not_created_again(self, stack, dataset_id, fake):
        template_id = start(stack, dataset_id)["id"]
        assert stack.runner.join(timeout=120)
        with stack.db.transaction() as s:  # a job like it, whose task has not run yet
            template = s.get(FinetuneJob, template_id)
            job = FinetuneJob(**{c: getattr(template, c) for c in ("tenant_id", "dataset_id", "prompt_set_id",
                                 "base_model", "method", "hyperparameters", "seed")})
            s.add(job)
            s.flush()
            job_id = job.id
        # The earlier worker created the remote job, then died before storing its id.
        client = fake.client()
        upload = client.files.create(file=("t.jsonl", fake.file_content(fake.job(template.remote["job_id"])["training_file"])),
                                     purpose="fine-tune")
        orphan = client.fine_tuning.jobs.create(model=BASE, training_file=upload.id,
                                                metadata={"synthaug_job_id": job_id})
        run_openai_finetune(stack.ctx, job_id)
        done = get(stack, f"/finetune-jobs/{job_id}")
        assert done["status"] == "succeeded" and done["remote"]["job_id"] == orphan.id
        creates = [r for r in fake.requests_to("/fine_tuning/jobs", "POST") if r.path == "/v1/fine_tuning/jobs"
                   and r.json["metadata"].get("synthaug_job_id") == job_id]
        assert len(creates) == 1  # the orphan's, made above; the driver made none

    def test_rate_limits_are_retried_honouring_retry_after(self, stack, dataset_id, fake):
        fake.fail_next("/fine_tuning/jobs", 429, times=2, retry_after_ms=20)
        job = start(stack, dataset_id)
        assert stack.runner.join(timeout=120)
        assert get(stack, f"/finetune-jobs/{job['id']}")["status"] == "succeeded"
        limited = [r for r in fake.requests if r.status == 429]
        assert len(limited) >= 2
        assert any(r.retry_count > 0 for r in fake.requests_to("/fine_tuning/jobs"))

    def test_openai_down_for_a_while_is_a_warning_not_a_failure(self, stack, dataset_id, fake):
        job, remote_id = held_remote_job(stack, dataset_id, fake)
        fake.fail_next(f"/fine_tuning/jobs/{remote_id}", 503, times=8)  # beyond the SDK's 3 retries
        wait_for("the outage warning", lambda: any("polling again" in e["message"] for e in events(stack, job["id"])))
        fake.options.advance_on_retrieve = True
        assert stack.runner.join(timeout=120)
        assert get(stack, f"/finetune-jobs/{job['id']}")["status"] == "succeeded"
