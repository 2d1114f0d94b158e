"""The report on the example data after a fine-tune long enough to learn the labels: the impaired
samples' filler rate stands above the control samples', as in the real data."""

from __future__ import annotations

from typing import Iterator

import pytest

from app.demo import DEMO_HYPERPARAMETERS, DEMO_SAMPLING
from app.settings import Settings
from tests.conftest import EXAMPLE_CSV, TEST_PEPPER, embedded_stack

pytestmark = pytest.mark.slow

# The demo's schedule, three epochs instead of five (about 5 minutes on 2 cores): enough for the labels.
SCHEDULE = {**DEMO_HYPERPARAMETERS, "num_epochs": 3}


@pytest.fixture(scope="module")
def report(tmp_path_factory, cache_dir) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("signal")
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir,
                        database_url=f"sqlite:///{data_dir / 'signal.db'}", report_bootstrap_resamples=100)
    with embedded_stack(settings, "signal") as stack:
        client, headers = stack.client, stack.headers
        upload = client.post("/datasets", headers=headers, files={"file": ("a.csv", EXAMPLE_CSV.read_bytes(), "text/csv")})
        assert upload.status_code == 201, upload.text
        job = client.post("/finetune-jobs", headers=headers, json={
            "dataset_id": upload.json()["id"], "method": "qlora", "hyperparameters": SCHEDULE})
        assert job.status_code == 201, job.text
        assert stack.runner.join(timeout=1800)
        adapter_id = client.get(f"/finetune-jobs/{job.json()['id']}", headers=headers).json()["adapter_id"]
        generation = client.post("/generate", headers=headers, json={
            "adapter_id": adapter_id, "counts": {"control": 12, "impaired": 12}, **DEMO_SAMPLING})
        assert generation.status_code == 202, generation.text
        assert stack.runner.join(timeout=1800)
        corpus_id = client.get(f"/generations/{generation.json()['id']}", headers=headers).json()["corpus_id"]
        row = client.get(f"/corpora/{corpus_id}/report", headers=headers).json()
        assert row["status"] == "succeeded", row["error"]
        yield row["report"]


class TestLabelSignal:
    def test_impaired_samples_have_more_fillers_than_control_samples(self, report):
        synthetic = {label: report["markers"][label]["synthetic"]["markers"]["fillers_per_100_words"]["mean"]
                     for label in ("control", "impaired")}
        real = {label: report["markers"][label]["real"]["markers"]["fillers_per_100_words"]["mean"]
                for label in ("control", "impaired")}
        assert real["impaired"] > 5 * real["control"]  # the data's own contrast
        assert synthetic["impaired"] > 3 * max(synthetic["control"], 0.5), synthetic

    def test_samples_end_on_their_own_and_do_not_loop(self, report):
        for label in ("control", "impaired"):
            completeness = report["completeness"][label]
            assert completeness["ended_share"] >= 0.9, (label, completeness)
            assert completeness["longest_run"]["kept_max"] <= completeness["longest_run"]["real_max"]

    def test_kept_samples_copy_no_real_transcript(self, report):
        assert report["memorization"]["synthetic"]["share_words_at_or_above"] == 0.0
