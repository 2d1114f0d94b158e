"""The task bodies through the embedded runner: real QLoRA on the bundled model, real sampling."""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
import time
from typing import Iterator

import pytest
from sqlalchemy import func, select

from app.db.models import Adapter, FinetuneJob, Sample
from app.db.session import Database
from tests.api.factories import balanced_rows, csv_bytes
from tests.conftest import EXAMPLE_CSV, RecordingQueue
from worker.context import WorkerContext
from worker.reaper import reap
from worker.runner import job_dir, run_finetune
from worker.training import get_trainer

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


def upload_split_data(stack) -> str:
    """Ten short transcripts with their splits given: eight train, two validation."""
    rows = balanced_rows(5, splits=["train", "train", "train", "train", "validation"])
    r = stack.client.post("/datasets", headers=stack.headers,
                          files={"file": ("split.csv", csv_bytes(rows, ("id", "text", "label", "split")), "text/csv")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def stale_reaper(stack) -> Iterator[tuple[WorkerContext, RecordingQueue]]:
    """The real reaper, on a clock where every heartbeat is stale: it releases whatever runs, as it does
    when a worker died; what it sends again is recorded, for the test to deliver."""
    resent = RecordingQueue()
    settings = stack.settings.model_copy(update={"stale_after_s": 0.0})
    reaper = WorkerContext(settings, Database(settings.resolved_database_url, resent))
    yield reaper, resent
    reaper.db.dispose()


def release(reaper: WorkerContext) -> None:
    """Reap until something is released (a heartbeat written that very moment keeps a row one more pass)."""
    deadline = time.monotonic() + 30
    while not reap(reaper).resent:
        assert time.monotonic() < deadline, "the reaper released nothing"
        time.sleep(0.05)


class TrainerLosingItsJob:
    """The real trainer, whose job the reaper takes right after the first checkpoint."""

    def __init__(self, trainer, reaper: WorkerContext) -> None:
        self.trainer, self.reaper, self.released = trainer, reaper, False

    def train(self, spec, train, evaluation, on_event, should_stop):
        def report(event) -> None:
            on_event(event)
            if event.kind == "checkpoint" and not self.released:
                release(self.reaper)
                self.released = True

        return self.trainer.train(spec, train, evaluation, report, should_stop)


class SamplerLosingItsGeneration:
    """The real sampler, whose generation the reaper takes while it draws the second chunk."""

    def __init__(self, sampler, reaper: WorkerContext) -> None:
        self.sampler, self.reaper, self.calls, self.dropped = sampler, reaper, 0, []

    def chunk_size(self, target, params) -> int:
        return self.sampler.chunk_size(target, params)

    def sample(self, target, requests, params):
        completions = self.sampler.sample(target, requests, params)
        self.calls += 1
        if self.calls == 2:
            self.dropped = [c.text for c in completions]
            release(self.reaper)
        return completions


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
        assert "nf4 base weights are unpacked once" in fallbacks  # SYNTHAUG_CPU_UNPACKED_BASE_MAX_BYTES
        assert "LoRA weights kept in fp32" in fallbacks
        losses = [e["data"].get("loss") for e in events if e["kind"] == "metrics"]
        # A fresh LoRA on a pretrained model starts near its base loss (about 2-4 nats on these transcripts);
        # a NaN (stored as None), an infinity or a blown-up value means training broke.
        assert losses and all(loss is not None and math.isfinite(loss) and 0.1 < loss < 10 for loss in losses)
        assert trained["metrics"]["loss"] == losses[-1]
        assert get(stack, f"/finetune-jobs/{trained['id']}/checkpoints")["data"]

    def test_download_loads_with_peft(self, stack, trained, tmp_path):
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        from worker.models import load_model, materialize_base_model

        r = stack.client.get(f"/adapters/{trained['adapter_id']}/download", headers=stack.headers)
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            tar.extractall(tmp_path, filter="data")
        base = load_model(materialize_base_model("smollm2-135m-instruct", stack.settings.resolved_cache_dir), "none")
        adapter_dir = tmp_path / trained["adapter_id"]
        model = PeftModel.from_pretrained(base, adapter_dir)
        saved = load_file(adapter_dir / "adapter_model.safetensors")
        loaded = {name.replace(".default", ""): p for name, p in model.named_parameters() if ".lora_B." in name}
        assert loaded and loaded.keys() <= saved.keys()
        # lora_B starts at zero, so a non-zero one that PEFT loaded equal to the file shows trained weights arrived.
        name = next(iter(sorted(loaded)))
        assert torch.equal(loaded[name].detach().cpu(), saved[name]) and saved[name].abs().sum() > 0

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
        assert other_seed["status"] == "succeeded" and other_seed["done"] == 3, other_seed["error"]
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

    def test_a_generation_taken_from_its_worker_mid_run_is_finished_by_the_next_delivery(self, stack, trained,
                                                                                          stale_reaper, monkeypatch):
        reaper, resent = stale_reaper
        sampler = SamplerLosingItsGeneration(stack.ctx.sampler("hf"), reaper)
        monkeypatch.setattr(stack.ctx, "sampler", lambda name: sampler)
        r = stack.client.post("/generate", headers=stack.headers, json={
            "adapter_id": trained["adapter_id"], "label": "control", "filters": KEEP_ALL, **SAMPLING, "n": 5,
            "max_tokens": 8})  # short samples: what is tested is which indexes get drawn, and when
        assert r.status_code == 202, r.text
        gen_id = r.json()["id"]
        assert stack.runner.join(timeout=600)
        # The worker saw the row was no longer its own: the chunk it drew when the reaper took it is dropped.
        interrupted = get(stack, f"/generations/{gen_id}")
        assert (interrupted["status"], interrupted["done"], sampler.calls) == ("queued", 2, 2)
        assert resent.sent == [("generation.run", gen_id)]
        monkeypatch.undo()
        stack.runner.enqueue(*resent.sent[0])
        assert stack.runner.join(timeout=600)
        gen = get(stack, f"/generations/{gen_id}")
        assert gen["status"] == "succeeded" and (gen["done"], gen["candidates"], gen["attempts"]) == (5, 5, 2)
        samples = get(stack, f"/corpora/{gen['corpus_id']}/samples")["data"]
        assert [s["index"] for s in samples] == [0, 1, 2, 3, 4]
        # Seeds are per index: the next delivery drew exactly the samples the lost chunk had drawn.
        assert [s["text"] for s in samples[2:4]] == sampler.dropped


class TestCorpusOfARealGeneration:
    def test_detail_sample_pages_and_exports_match_the_stored_samples(self, stack, trained):
        r = stack.client.post("/generate", headers=stack.headers, json={
            "adapter_id": trained["adapter_id"], "counts": {"control": 2, "impaired": 1}, "filters": KEEP_ALL,
            **{k: v for k, v in SAMPLING.items() if k not in ("n", "batch_size", "max_tokens")}, "batch_size": 8,
            "max_tokens": 8,
        })
        assert r.status_code == 202, r.text
        assert stack.runner.join(timeout=600)
        gen = get(stack, f"/generations/{r.json()['id']}")
        assert gen["status"] == "succeeded", gen["error"]
        corpus_id = gen["corpus_id"]
        with stack.db.transaction() as s:
            stored = {row.id: row for row in s.scalars(select(Sample).where(Sample.corpus_id == corpus_id))}
        assert len(stored) == 3 and all(row.status == "accepted" for row in stored.values())
        corpus = get(stack, f"/corpora/{corpus_id}")
        assert corpus["counts"] == {"control": 2, "impaired": 1}

        first = get(stack, f"/corpora/{corpus_id}/samples?limit=2")
        second = get(stack, f"/corpora/{corpus_id}/samples?limit=2&cursor={first['next_cursor']}")
        assert len(first["data"]) == 2 and second["next_cursor"] is None
        paged = first["data"] + second["data"]
        assert sorted(s["id"] for s in paged) == sorted(stored)
        for s in paged:
            row = stored[s["id"]]
            assert (s["label"], s["text"], s["index"], s["provenance"]) == (row.label, row.text, row.index,
                                                                            row.provenance)
            assert s["provenance"]["adapter_id"] == trained["adapter_id"] and s["provenance"]["tokens"] > 0

        r = stack.client.get(f"/corpora/{corpus_id}/export?format=jsonl", headers=stack.headers)
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert sorted(line["id"] for line in lines) == sorted(stored)
        for line in lines:
            row = stored[line["id"]]
            assert line["synthetic"] is True and line["provenance"] == row.provenance
            assert (line["label"], line["text"], line["index"], line["generation_id"]) == (
                row.label, row.text, row.index, gen["id"])
            assert (line["adapter_id"], line["seed"], line["sample_seed"], line["params"]) == (
                trained["adapter_id"], SAMPLING["seed"], row.provenance["sample_seed"], row.provenance["params"])

        r = stack.client.get(f"/corpora/{corpus_id}/export?format=csv", headers=stack.headers)
        assert r.status_code == 200
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert sorted(int(row["id"]) for row in rows) == sorted(stored)
        for row in rows:
            sample = stored[int(row["id"])]
            assert (row["label"], row["text"], row["index"], row["sample_seed"]) == (
                sample.label, sample.text, str(sample.index), str(sample.provenance["sample_seed"]))
            assert json.loads(row["params"]) == sample.provenance["params"]


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
    def test_cancel_stops_a_running_job_at_the_next_step(self, stack):
        job_id = start_job(stack, upload(stack), max_steps=200)
        deadline = time.monotonic() + 300
        while get(stack, f"/finetune-jobs/{job_id}")["step"] < 1:
            assert time.monotonic() < deadline, "training never reached step 1"
            time.sleep(0.2)
        r = stack.client.post(f"/finetune-jobs/{job_id}/cancel", headers=stack.headers)
        assert r.status_code == 200 and r.json()["cancel_requested"]
        # The step the trainer had logged when the cancel was committed; the step in progress may end.
        step_at_cancel = get(stack, f"/finetune-jobs/{job_id}")["step"]
        assert stack.runner.join(timeout=300)
        job = get(stack, f"/finetune-jobs/{job_id}")
        assert job["status"] == "cancelled" and job["adapter_id"] is None
        assert 1 <= job["step"] <= step_at_cancel + 1
        events = get(stack, f"/finetune-jobs/{job_id}/events?limit=500")["data"]
        assert events[-1]["message"] == "job cancelled"
        assert max(e["data"]["step"] for e in events if e["kind"] == "metrics") == job["step"]
        with stack.db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Adapter).where(Adapter.job_id == job_id)) == 0
        # Nothing written where an adapter goes: a run stopped because another worker took its job
        # over would otherwise replace that worker's adapter in the job's directory.
        assert not (job_dir(stack.ctx.settings, job_id) / "adapter").exists()
        assert events[-2]["message"].startswith("training stopped at step")


class TestRecovery:
    def test_a_job_taken_from_its_worker_mid_training_resumes_from_its_last_checkpoint(self, stack, stale_reaper,
                                                                                           monkeypatch):
        reaper, resent = stale_reaper
        monkeypatch.setattr(stack.ctx, "trainer", lambda method: TrainerLosingItsJob(get_trainer(method), reaper))
        # 8 train examples in batches of 4, two epochs: a checkpoint at step 2 of 4.
        job_id = start_job(stack, upload_split_data(stack), max_steps=None, num_epochs=2, batch_size=4)
        assert stack.runner.join(timeout=600)
        assert resent.sent == [("finetune.run", job_id)]
        interrupted = get(stack, f"/finetune-jobs/{job_id}")
        assert interrupted["status"] == "queued" and interrupted["adapter_id"] is None
        monkeypatch.undo()
        stack.runner.enqueue(*resent.sent[0])
        assert stack.runner.join(timeout=600)
        job = get(stack, f"/finetune-jobs/{job_id}")
        assert job["status"] == "succeeded" and job["attempts"] == 2 and job["adapter_id"], job["error"]
        assert job["step"] == job["total_steps"] == 4
        events = get(stack, f"/finetune-jobs/{job_id}/events?limit=1000")["data"]
        resumed_at = next(i for i, e in enumerate(events) if e["data"].get("attempt") == 2)
        assert 0 < events[resumed_at]["data"]["resumed_from_step"] == 2 < job["total_steps"]
        assert [e["data"]["step"] for e in events[resumed_at:] if e["kind"] == "metrics"] == [3, 4]
        assert [c["step"] for c in get(stack, f"/finetune-jobs/{job_id}/checkpoints")["data"]] == [2, 4]

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
