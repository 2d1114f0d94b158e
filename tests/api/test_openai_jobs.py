"""POST /finetune-jobs with method openai: allowed models, typed hyperparameters, pre-flight checks
(errors are a 422 naming the example, warnings are job events), pause/resume, adapters that are model ids."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.db.models import Adapter
from tests.api.factories import balanced_rows, create_job, csv_bytes, update_job, upload, upload_small_dataset


def openai_job(client, auth, dataset_id: str, **body):
    return create_job(client, auth, dataset_id, method="openai", **body)


@pytest.fixture
def dataset_id(client, auth) -> str:
    """24 train and 6 validation records: enough for OpenAI's minimum of 10 examples."""
    rows = balanced_rows(15, splits=["train", "train", "train", "train", "validation"])
    response = upload(client, auth, csv_bytes(rows, header=("id", "text", "label", "split")), "thirty.csv")
    assert response.status_code == 201, response.text
    return response.json()["id"]


class TestCreate:
    def test_queued_on_the_default_model_with_a_preflight_summary(self, client, auth, dataset_id, queue):
        response = openai_job(client, auth, dataset_id, hyperparameters={"n_epochs": 2, "suffix": "adress-pilot"})
        assert response.status_code == 201, response.text
        job = response.json()
        assert (job["method"], job["base_model"], job["status"]) == ("openai", "gpt-4o-mini-2024-07-18", "queued")
        assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto",
                                          "suffix": "adress-pilot", "metadata": {}}
        summary = job["remote"]["preflight"]
        stats = summary["stats"]
        assert (stats["train"]["examples"], stats["validation"]["examples"]) == (24, 6)
        assert summary["billed_tokens_estimate"] == 2 * stats["train"]["billed_tokens"] > 0
        assert queue.sent == [("openai_finetune.run", job["id"])]

    def test_warnings_are_job_events(self, client, auth, dataset_id):
        job = openai_job(client, auth, dataset_id).json()
        events = client.get(f"/finetune-jobs/{job['id']}/events", headers=auth).json()["data"]
        warnings = [e for e in events if e["kind"] == "warning"]
        assert any(w["data"]["code"] == "few_examples" for w in warnings)  # 24 < the guide's 50
        assert any("billed tokens" in e["message"] for e in events)

    def test_a_model_outside_the_allow_list_is_422_listing_the_allowed(self, client, auth, dataset_id, queue):
        response = openai_job(client, auth, dataset_id, base_model="gpt-4-turbo")
        assert response.status_code == 422
        assert "'gpt-4-turbo' is not an OpenAI model" in response.json()["detail"]
        assert "gpt-4o-mini-2024-07-18" in response.json()["detail"] and queue.sent == []

    @pytest.mark.parametrize("hyperparameters, named", [
        ({"n_epochs": 0}, "hyperparameters.n_epochs"),
        ({"lora_r": 8}, "hyperparameters.lora_r"),
        ({"suffix": "a:b"}, "hyperparameters.suffix"),
        ({"metadata": {"synthaug_job_id": "x"}}, "hyperparameters.metadata"),
    ])
    def test_bad_hyperparameters_are_422_naming_the_field(self, client, auth, dataset_id, hyperparameters, named):
        response = openai_job(client, auth, dataset_id, hyperparameters=hyperparameters)
        assert response.status_code == 422 and named in response.json()["detail"], response.text

    def test_openai_hyperparameters_are_refused_for_a_local_method(self, client, auth, dataset_id):
        response = create_job(client, auth, dataset_id, method="qlora", hyperparameters={"n_epochs": 2})
        assert response.status_code == 422 and "hyperparameters.n_epochs" in response.json()["detail"]

    def test_too_few_examples_is_422_before_anything_is_stored(self, client, auth, queue):
        small = upload_small_dataset(client, auth)  # six train records
        response = openai_job(client, auth, small["id"])
        assert response.status_code == 422
        assert "too_few_examples" in response.json()["detail"] or "at least 10" in response.json()["detail"]
        assert response.json()["preflight"]["error_counts"] == {"too_few_examples": 1}
        assert client.get("/finetune-jobs", headers=auth).json()["data"] == [] and queue.sent == []

    def test_an_example_over_the_models_limit_is_422_naming_it(self, client, auth, settings):
        settings.openai_models = [*settings.openai_models, "gpt-3.5-turbo-0613"]  # 4,096 tokens per example
        rows = balanced_rows(6, splits=["train"])
        rows[3][1] = "uh the boy " * 2000  # about 6,000 tokens
        response = upload(client, auth, csv_bytes(rows, header=("id", "text", "label", "split")), "long.csv")
        response = openai_job(client, auth, response.json()["id"], base_model="gpt-3.5-turbo-0613")
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "train example" in detail and "4096" in detail.replace(",", ""), detail


class TestPauseResume:
    def test_only_openai_jobs_pause(self, client, auth):
        job = create_job(client, auth, upload_small_dataset(client, auth)["id"]).json()
        response = client.post(f"/finetune-jobs/{job['id']}/pause", headers=auth)
        assert response.status_code == 409 and "only openai jobs" in response.json()["detail"]

    def test_a_job_without_a_remote_job_cannot_pause_yet(self, client, auth, dataset_id):
        job = openai_job(client, auth, dataset_id).json()
        response = client.post(f"/finetune-jobs/{job['id']}/pause", headers=auth)
        assert response.status_code == 409 and "no OpenAI job yet" in response.json()["detail"]

    def test_pause_and_resume_are_recorded_for_the_driver(self, client, auth, db, dataset_id):
        job = openai_job(client, auth, dataset_id).json()
        update_job(db, job["id"], status="running", owner="w", remote={"job_id": "ftjob-1", "status": "running"})
        paused = client.post(f"/finetune-jobs/{job['id']}/pause", headers=auth).json()
        assert paused["remote"]["desired"] == "paused"
        resumed = client.post(f"/finetune-jobs/{job['id']}/resume", headers=auth).json()
        assert resumed["remote"]["desired"] == "running"

    def test_cancel_of_a_job_queued_at_openai_waits_for_its_driver(self, client, auth, db, dataset_id, queue):
        job = openai_job(client, auth, dataset_id).json()
        update_job(db, job["id"], owner="w", remote={"job_id": "ftjob-1", "status": "queued"})  # remote "queued"
        body = client.post(f"/finetune-jobs/{job['id']}/cancel", headers=auth).json()
        assert (body["status"], body["cancel_requested"]) == ("queued", True) and queue.revoked == []


class TestOpenAIAdapters:
    def test_an_openai_adapter_has_no_files_and_samples_only_through_openai(self, client, auth, db, dataset_id,
                                                                            settings, tenant_id):
        job = openai_job(client, auth, dataset_id).json()
        with db.transaction() as s:
            adapter = Adapter(tenant_id=tenant_id, job_id=job["id"], prompt_set_id=job["prompt_set_id"],
                              base_model=job["base_model"], method="openai", kind="openai",
                              remote_model="ft:gpt-4o-mini-2024-07-18:lab::abc123")
            s.add(adapter)
            s.flush()
            adapter_id = adapter.id
        shown = client.get(f"/adapters/{adapter_id}", headers=auth).json()
        assert (shown["kind"], shown["remote_model"]) == ("openai", "ft:gpt-4o-mini-2024-07-18:lab::abc123")
        download = client.get(f"/adapters/{adapter_id}/download", headers=auth)
        assert download.status_code == 409 and "has no files" in download.json()["detail"]
        body = {"adapter_id": adapter_id, "label": "impaired", "n": 2}
        wrong = client.post("/generate", headers=auth, json={**body, "sampler": "hf"})
        assert wrong.status_code == 422 and "sampled through OpenAI" in wrong.json()["detail"]
        no_key = client.post("/generate", headers=auth, json=body)
        assert no_key.status_code == 422 and "SYNTHAUG_OPENAI_API_KEY" in no_key.json()["detail"]
        settings.openai_api_key = SecretStr("sk-test")
        too_hot = client.post("/generate", headers=auth, json={**body, "temperature": 2.5})
        assert too_hot.status_code == 422 and "OpenAI's maximum of 2" in too_hot.json()["detail"]
        accepted = client.post("/generate", headers=auth, json=body)
        assert accepted.status_code == 202 and accepted.json()["sampler"] == "openai"
