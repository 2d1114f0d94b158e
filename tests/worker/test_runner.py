"""The task bodies through the embedded runner: real QLoRA on the bundled model, real sampling."""

from __future__ import annotations

import io
import tarfile
import time

import pytest
from sqlalchemy import delete, func, select

from app.db.models import Adapter, FinetuneJob, Generation, Sample
from tests.conftest import EXAMPLE_CSV
from worker.runner import run_finetune, run_generation

pytestmark = pytest.mark.slow

TINY = {"lora_r": 4, "lora_alpha": 8, "max_steps": 2, "batch_size": 2, "max_seq_length": 256, "num_epochs": 1}
SAMPLING = {"n": 3, "temperature": 0.9, "top_p": 0.95, "top_k": 40, "max_tokens": 24, "seed": 5, "batch_size": 2}
# Filters that keep whatever a two-step adapter writes, to test the plumbing rather than the model.
KEEP_ALL = {"keep_truncated": True, "min_words": 0, "degenerate": False, "memorization_ngram": None, "dedupe": False,
            "label_consistency": False}


def upload(stack) -> str:
    r = stack.client.post("/datasets", headers=stack.headers,
                          files={"file": ("a.csv", EXAMPLE_CSV.read_bytes(), "text/csv")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_job(stack, dataset_id: str, **hyperparameters) -> str:
    r = stack.client.post("/finetune-jobs", headers=stack.headers, json={
        "dataset_id": dataset_id, "method": "qlora", "hyperparameters": {**TINY, **hyperparameters},
    })
    assert r.status_code == 201, r.text
    return r.json()["id"]


def get(stack, path: str) -> dict:
    r = stack.client.get(path, headers=stack.headers)
    assert r.status_code == 200, r.text
    return r.json()


def generate(stack, adapter_id: str, label: str, **extra) -> dict:
    r = stack.client.post("/generate", headers=stack.headers,
                          json={"adapter_id": adapter_id, "label": label, **SAMPLING, **extra})
    assert r.status_code == 202, r.text
    assert stack.runner.join(timeout=600)
    return get(stack, f"/generations/{r.json()['id']}")


def texts(stack, corpus_id: str) -> list[str]:
    return [s["text"] for s in get(stack, f"/corpora/{corpus_id}/samples")["data"]]


@pytest.fixture(scope="module")
def trained(stack) -> dict:
    job_id = start_job(stack, upload(stack))
    assert stack.runner.join(timeout=900)
    return get(stack, f"/finetune-jobs/{job_id}")


class TestFinetune:
    def test_succeeds_and_registers_an_adapter(self, stack, trained):
        assert trained["status"] == "succeeded", trained["error"]
        assert trained["step"] == trained["total_steps"] == 2
        assert trained["attempts"] == 1
        adapter = get(stack, f"/adapters/{trained['adapter_id']}")
        assert adapter["base_model"] == "smollm2-135m-instruct" and adapter["method"] == "qlora"

    def test_events_record_cpu_fallbacks_loss_and_checkpoints(self, stack, trained):
        events = get(stack, f"/finetune-jobs/{trained['id']}/events")["data"]
        kinds = {e["kind"] for e in events}
        assert {"fallback", "metrics", "checkpoint"} <= kinds
        fallbacks = " ".join(e["message"] for e in events if e["kind"] == "fallback")
        assert "adamw_torch" in fallbacks and "fp16" in fallbacks
        assert any(e["data"].get("loss") is not None for e in events if e["kind"] == "metrics")
        assert get(stack, f"/finetune-jobs/{trained['id']}/checkpoints")["data"]

    def test_download_loads_with_peft(self, stack, trained, tmp_path):
        from peft import PeftModel

        from worker.models import load_model, materialize_base_model

        r = stack.client.get(f"/adapters/{trained['adapter_id']}/download", headers=stack.headers)
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            tar.extractall(tmp_path, filter="data")
        base = load_model(materialize_base_model("smollm2-135m-instruct", stack.settings.resolved_cache_dir), "none")
        model = PeftModel.from_pretrained(base, tmp_path / trained["adapter_id"])
        assert any("lora_A" in name for name, _ in model.named_parameters())

    def test_rerun_of_a_finished_job_adds_no_second_adapter(self, stack, trained):
        run_finetune(stack.ctx, trained["id"])
        with stack.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Adapter).where(Adapter.job_id == trained["id"])) == 1
            assert s.get(FinetuneJob, trained["id"]).attempts == 1


class TestGenerate:
    def test_samples_with_provenance_and_same_seed_same_texts(self, stack, trained):
        first = generate(stack, trained["adapter_id"], "impaired", filters=KEEP_ALL)
        assert first["status"] == "succeeded", first["error"]
        assert (first["done"], first["candidates"], first["rejected"]) == (3, 3, {})
        assert first["chunk_size"] == 2 and not first["budget_exhausted"]
        samples = get(stack, f"/corpora/{first['corpus_id']}/samples")["data"]
        assert [s["provenance"]["index"] for s in samples] == [0, 1, 2]
        assert all(s["finish_reason"] in ("stop", "length") and s["status"] == "accepted" for s in samples)
        assert all(s["provenance"]["adapter_id"] == trained["adapter_id"] for s in samples)
        assert all(s["provenance"]["sampler"] == "hf" and s["provenance"]["tokens"] > 0 for s in samples)
        assert samples[0]["provenance"]["prompt"][0]["role"] == "system"
        assert len({s["provenance"]["sample_seed"] for s in samples}) == 3
        assert {"words", "longest_repeat", "real_overlap"} <= set(samples[0]["checks"])
        second = generate(stack, trained["adapter_id"], "impaired", filters=KEEP_ALL)
        assert texts(stack, second["corpus_id"]) == texts(stack, first["corpus_id"])
        other_seed = generate(stack, trained["adapter_id"], "impaired", filters=KEEP_ALL, seed=6)
        assert texts(stack, other_seed["corpus_id"]) != texts(stack, first["corpus_id"])

    def test_rejected_samples_are_replaced_until_the_budget_runs_out(self, stack, trained):
        # Every sample is cut at 4 tokens, so every one is rejected as truncated.
        gen = generate(stack, trained["adapter_id"], "control", max_tokens=4,
                       filters={"candidate_budget": 2.0, "min_words": 0})
        assert gen["status"] == "succeeded", gen["error"]
        assert (gen["done"], gen["candidates"], gen["rejected"]) == (0, 6, {"truncated": 6})
        assert gen["budget_exhausted"] and gen["progress"] == {"control": {"accepted": 0, "rejected": 6}}
        rejected = get(stack, f"/corpora/{gen['corpus_id']}/samples?status=rejected")["data"]
        assert [(s["index"], s["reject_reason"], s["finish_reason"]) for s in rejected] == [
            (i, "truncated", "length") for i in range(6)
        ]
        assert get(stack, f"/corpora/{gen['corpus_id']}/samples")["data"] == []
        corpus = get(stack, f"/corpora/{gen['corpus_id']}")
        assert corpus["counts"] == {} and corpus["rejected"] == {"control": {"truncated": 6}}

    def test_several_labels_in_one_generation(self, stack, trained):
        r = stack.client.post("/generate", headers=stack.headers, json={
            "adapter_id": trained["adapter_id"], "counts": {"control": 2, "impaired": 3}, "filters": KEEP_ALL,
            **{k: v for k, v in SAMPLING.items() if k not in ("n", "batch_size")}, "batch_size": 8,
        })
        assert r.status_code == 202, r.text
        assert stack.runner.join(timeout=600)
        gen = get(stack, f"/generations/{r.json()['id']}")
        assert gen["status"] == "succeeded" and gen["done"] == 5
        assert get(stack, f"/corpora/{gen['corpus_id']}")["counts"] == {"control": 2, "impaired": 3}
        assert gen["chunk_size"] == 8 and gen["candidates"] == 5  # both labels drawn in one chunk
        samples = get(stack, f"/corpora/{gen['corpus_id']}/samples")["data"]
        assert sorted((s["label"], s["index"]) for s in samples) == [
            ("control", 0), ("control", 1), ("impaired", 0), ("impaired", 1), ("impaired", 2)
        ]

    def test_resume_after_a_crash_completes_without_duplicates(self, stack, trained):
        gen = generate(stack, trained["adapter_id"], "control", filters=KEEP_ALL)
        before = texts(stack, gen["corpus_id"])
        with stack.db.transaction() as s:
            s.execute(delete(Sample).where(Sample.generation_id == gen["id"], Sample.index >= 2))
            row = s.get(Generation, gen["id"])
            row.status, row.done, row.owner = "running", 2, "a-worker-that-is-still-alive"
        run_generation(stack.ctx, gen["id"])  # its heartbeat is fresh: this delivery leaves it alone
        assert len(texts(stack, gen["corpus_id"])) == 2
        with stack.db.transaction() as s:
            s.get(Generation, gen["id"]).heartbeat_at = None  # the worker died
        run_generation(stack.ctx, gen["id"])
        run_generation(stack.ctx, gen["id"])
        assert texts(stack, gen["corpus_id"]) == before
        assert get(stack, f"/generations/{gen['id']}")["status"] == "succeeded"


class TestExampleLengths:
    def insert_job(self, stack, trained, **hyperparameters) -> str:
        with stack.db.transaction() as s:
            job = s.get(FinetuneJob, trained["id"])
            queued = FinetuneJob(**{c: getattr(job, c) for c in ("tenant_id", "dataset_id", "prompt_set_id",
                                    "base_model", "method", "seed")},
                                 hyperparameters={**job.hyperparameters, **hyperparameters})
            s.add(queued)
            s.flush()
            return queued.id

    def test_the_worker_refuses_too_long_examples_the_api_could_not_count(self, stack, trained):
        job_id = self.insert_job(stack, trained, max_seq_length=100)
        run_finetune(stack.ctx, job_id)
        job = get(stack, f"/finetune-jobs/{job_id}")
        assert job["status"] == "failed" and job["step"] == 0
        assert "longer than max_seq_length 100" in job["error"] and "allow_truncation" in job["error"]

    def test_allowed_truncation_is_a_warning_event(self, stack, trained):
        job_id = self.insert_job(stack, trained, max_seq_length=100, allow_truncation=True, max_steps=1)
        run_finetune(stack.ctx, job_id)
        assert get(stack, f"/finetune-jobs/{job_id}")["status"] == "succeeded"
        warnings = [e for e in get(stack, f"/finetune-jobs/{job_id}/events")["data"] if e["kind"] == "warning"]
        assert len(warnings) == 1 and "cut at max_seq_length 100" in warnings[0]["message"]
        assert warnings[0]["data"]["too_long"] > 0


class TestCancel:
    def test_cancel_stops_a_running_job_between_steps(self, stack):
        job_id = start_job(stack, upload(stack), max_steps=200)
        deadline = time.monotonic() + 300
        while get(stack, f"/finetune-jobs/{job_id}")["step"] < 1:
            assert time.monotonic() < deadline, "training never reached step 1"
            time.sleep(0.5)
        r = stack.client.post(f"/finetune-jobs/{job_id}/cancel", headers=stack.headers)
        assert r.status_code == 200 and r.json()["cancel_requested"]
        assert stack.runner.join(timeout=300)
        job = get(stack, f"/finetune-jobs/{job_id}")
        assert job["status"] == "cancelled"
        assert job["step"] < 200 and job["adapter_id"] is None


class TestRecovery:
    def test_a_job_left_running_by_a_crash_is_picked_up_again(self, stack, trained):
        job_id = start_job(stack, trained["dataset_id"])
        assert stack.runner.join(timeout=600)
        with stack.db.transaction() as s:
            job = s.get(FinetuneJob, job_id)
            job.status, job.finished_at = "running", None
            s.execute(delete(Adapter).where(Adapter.job_id == job_id))
        assert job_id in stack.runner.recover()
        assert stack.runner.join(timeout=600)
        job = get(stack, f"/finetune-jobs/{job_id}")
        assert job["status"] == "succeeded" and job["attempts"] == 2 and job["adapter_id"]

    def test_a_job_that_keeps_dying_is_failed_with_a_reason(self, stack, trained):
        with stack.db.transaction() as s:
            job = s.get(FinetuneJob, trained["id"])
            dead = FinetuneJob(**{c: getattr(job, c) for c in ("tenant_id", "dataset_id", "prompt_set_id",
                                  "base_model", "method", "hyperparameters", "seed")},
                               status="running", attempts=stack.settings.max_attempts)
            s.add(dead)
            s.flush()
            dead_id = dead.id
        stack.runner.recover()
        assert stack.runner.join(timeout=60)
        job = get(stack, f"/finetune-jobs/{dead_id}")
        assert job["status"] == "failed" and "gave up after" in job["error"]
