"""Factories for the API tests: uploads go through the API; rows the API cannot create (adapters,
corpora, generations, samples, job progress) are written through ``db.transaction()``."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

from app.db import repositories as repo
from app.db.models import Adapter, Checkpoint, Corpus, Dataset, FinetuneJob, Generation, Sample
from app.db.session import Database
from app.domain.prompts import default_prompt_set
from app.domain.sampling import FilterSettings, SamplingParams
from app.services import finetune_jobs, prompt_sets
from tests.conftest import EXAMPLE_CSV

ANIMALS = ["cat", "dog", "owl", "fox", "elk", "yak", "emu", "bat", "ant", "eel"]
DEFAULT_PARAMS = SamplingParams().model_dump()

# A valid custom prompt set body for POST /prompt-sets.
CUSTOM_PROMPT_SET = {
    "name": "short roles",
    "instruction": "Transcribe a {wording} describing the picture.",
    "labels": {
        "control": {
            "wording": "healthy speaker",
            "training_roles": ["You know healthy speech.", "You study fluent speakers."],
            "inference_prompt": "The speaker is healthy.",
        },
        "impaired": {
            "wording": "speaker with dementia",
            "training_roles": ["You know speech in dementia."],
            "inference_prompt": "The speaker has dementia.",
        },
    },
}


# uploads

def make_text(i: int) -> str:
    """A distinct picture description of more than ten words."""
    return f"The boy on the stool takes cookie number {i} while the mother dries a plate near the {ANIMALS[i % 10]}."


def csv_bytes(rows: list[list[Any]], header: tuple[str, ...] = ("id", "text", "label")) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def jsonl_bytes(objects: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(obj) for obj in objects).encode()


def balanced_rows(n_per_label: int = 3, *, splits: list[str] | None = None) -> list[list[Any]]:
    """Rows ``[id, text, label(, split)]``, labels alternating 0/1; ``splits`` cycles over rows."""
    rows: list[list[Any]] = []
    for i in range(2 * n_per_label):
        row: list[Any] = [f"S{i:03d}", make_text(i), i % 2]
        if splits is not None:
            row.append(splits[i % len(splits)])
        rows.append(row)
    return rows


def upload(
    client: TestClient, auth: dict[str, str], data: bytes, filename: str = "upload.csv", **form: Any
) -> Response:
    return client.post("/datasets", headers=auth, files={"file": (filename, data)}, data=form)


def upload_example_dataset(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    """The bundled illustrative CSV (120 rows, splits assigned)."""
    response = upload(client, auth, EXAMPLE_CSV.read_bytes(), "adress_illustrative.csv")
    assert response.status_code == 201, response.text
    return response.json()


def upload_small_dataset(client: TestClient, auth: dict[str, str], name: str | None = None) -> dict[str, Any]:
    """Six records, every one in train (the quickest dataset a job accepts)."""
    form = {"name": name} if name else {}
    data = csv_bytes(balanced_rows(3, splits=["train"]), header=("id", "text", "label", "split"))
    response = upload(client, auth, data, "small.csv", **form)
    assert response.status_code == 201, response.text
    return response.json()


# fine-tune jobs

def create_job(
    client: TestClient, auth: dict[str, str], dataset_id: str, *, key: str | None = None, **body: Any
) -> Response:
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    return client.post("/finetune-jobs", headers=headers, json={"dataset_id": dataset_id, **body})


def queued_job(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    dataset = upload_small_dataset(client, auth)
    response = create_job(client, auth, dataset["id"])
    assert response.status_code == 201, response.text
    return response.json()


def tenant_id_of(db: Database, name: str) -> str:
    with db.transaction() as session:
        return repo.get_tenant_by_name(session, name).id


def update_job(db: Database, job_id: str, **values: Any) -> None:
    with db.transaction() as session:
        job = session.get(FinetuneJob, job_id)
        for column, value in values.items():
            setattr(job, column, value)


def add_events(db: Database, job_id: str, count: int, kind: str = "loss") -> list[int]:
    """``count`` events with a decreasing loss; returns their ids."""
    with db.transaction() as session:
        return [
            finetune_jobs.add_event(session, job_id, kind, f"step {i}", {"step": i, "loss": 2.0 / (i + 1)}).id
            for i in range(count)
        ]


def add_checkpoint(db: Database, job_id: str, step: int, epoch: float) -> None:
    with db.transaction() as session:
        session.add(Checkpoint(job_id=job_id, step=step, epoch=epoch, path=f"/artifacts/{job_id}/checkpoint-{step}"))


# adapters, corpora, generations, samples

def write_adapter_files(directory: Path) -> Path:
    """A minimal PEFT LoRA directory: adapter_config.json and a valid one-tensor safetensors file."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "smollm2-135m-instruct",
        "r": 64,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    header = json.dumps({"lora_A.weight": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]}}).encode()
    tensor = struct.pack("<2f", 0.5, -0.5)
    (directory / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + tensor)
    return directory


def insert_adapter(
    db: Database, tenant_id: str, directory: Path, *, prompt_set_id: str = "ps_default", dataset_id: str | None = None
) -> str:
    """A succeeded job on ``dataset_id`` (default: an empty stub dataset) and the adapter it registered
    at ``directory``."""
    with db.transaction() as session:
        prompt_sets.ensure_default(session)
        if dataset_id is None:
            dataset = Dataset(
                tenant_id=tenant_id, name="stub", filename="stub.csv", column_mapping={}, report={}, record_count=0
            )
            session.add(dataset)
            session.flush()
            dataset_id = dataset.id
        job = FinetuneJob(
            tenant_id=tenant_id, dataset_id=dataset_id, prompt_set_id=prompt_set_id,
            base_model="smollm2-135m-instruct", method="qlora", hyperparameters={}, status="succeeded",
        )
        session.add(job)
        session.flush()
        adapter = Adapter(
            tenant_id=tenant_id, job_id=job.id, prompt_set_id=prompt_set_id,
            base_model="smollm2-135m-instruct", method="qlora", path=str(directory),
        )
        session.add(adapter)
        session.flush()
        return adapter.id


def insert_corpus(db: Database, tenant_id: str, name: str = "corpus", dataset_id: str | None = None) -> str:
    with db.transaction() as session:
        corpus = Corpus(tenant_id=tenant_id, name=name, dataset_id=dataset_id)
        session.add(corpus)
        session.flush()
        return corpus.id


def insert_generation(
    db: Database, tenant_id: str, adapter_id: str, corpus_id: str, label: str, texts: list[str],
    rejected: list[tuple[str, str]] = (),
) -> str:
    """A succeeded generation, its accepted samples and its rejected (text, reason) candidates after
    them, with provenance shaped as the worker writes it."""
    messages = default_prompt_set().inference_messages(label)
    with db.transaction() as session:
        generation = Generation(
            tenant_id=tenant_id, adapter_id=adapter_id, corpus_id=corpus_id, label=label,
            counts={label: len(texts)}, n=len(texts), done=len(texts), candidates=len(texts) + len(rejected),
            params=DEFAULT_PARAMS, filters=FilterSettings().model_dump(), sampler="hf", status="succeeded",
            progress={label: {"accepted": len(texts), "rejected": len(rejected)}}, rejected={},
        )
        session.add(generation)
        session.flush()
        provenance = {
            "generation_id": generation.id, "adapter_id": adapter_id, "base_model": "smollm2-135m-instruct",
            "method": "qlora", "prompt_set_id": "ps_default", "prompt": messages, "params": DEFAULT_PARAMS,
            "seed": DEFAULT_PARAMS["seed"], "sampler": "hf", "label": label,
        }
        candidates = [(text, None) for text in texts] + list(rejected)
        session.add_all(
            Sample(corpus_id=corpus_id, generation_id=generation.id, index=i, label=label, text=text,
                   status="rejected" if reason else "accepted", reject_reason=reason, finish_reason="stop",
                   checks={"words": len(text.split())}, provenance={**provenance, "index": i, "sample_seed": 1000 + i})
            for i, (text, reason) in enumerate(candidates)
        )
        return generation.id
