"""A fine-tune on an uploaded CHAT corpus (Pitt layout): its training examples keep the speaker's
fillers and pauses, and the real QLoRA run on them succeeds."""

from __future__ import annotations

import io
import zipfile
from typing import Iterator

import pytest

from app.db.models import FinetuneJob
from app.services import finetune_jobs
from app.settings import Settings
from tests.conftest import TEST_PEPPER, Stack, embedded_stack
from tests.unit.test_ingestion_archives import cha

pytestmark = pytest.mark.slow

TINY = {"lora_r": 4, "lora_alpha": 8, "max_steps": 1, "batch_size": 2, "max_seq_length": 256, "num_epochs": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, cache_dir) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("chat")
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir,
                        database_url=f"sqlite:///{data_dir / 'chat.db'}", report_on_generation=False)
    with embedded_stack(settings, "chat-tenant") as running:
        yield running


def pitt_zip() -> bytes:
    """Ten invented participants in Pitt's Control/Dementia folders, one of them with two visits."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(10):
            folder = "Control" if i % 2 else "Dementia"
            archive.writestr(f"Pitt/{folder}/{i:03d}-0.cha", cha(i))
        archive.writestr("Pitt/Dementia/000-2.cha", cha(11))  # participant 000's second visit
    return buffer.getvalue()


def test_a_fine_tune_on_chat_transcripts_trains_on_the_disfluencies(stack):
    r = stack.client.post("/datasets", headers=stack.headers, files={"file": ("pitt.zip", pitt_zip(), "application/zip")})
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["record_count"] == 11
    r = stack.client.post("/finetune-jobs", headers=stack.headers,
                          json={"dataset_id": dataset["id"], "method": "qlora", "hyperparameters": TINY})
    assert r.status_code == 201, r.text
    job = r.json()
    with stack.db.transaction() as s:
        row = s.get(FinetuneJob, job["id"])
        train, _validation = finetune_jobs.training_examples(s, row.tenant_id, row.dataset_id, row.prompt_set_id,
                                                             row.seed)
    answers = [example[-1]["content"] for example in train]
    assert answers and all(a.startswith("uh the boy takes cookie number") and " ... " in a for a in answers)
    assert stack.runner.join(timeout=600)
    done = stack.client.get(f"/finetune-jobs/{job['id']}", headers=stack.headers).json()
    assert done["status"] == "succeeded" and done["adapter_id"], done["error"]

