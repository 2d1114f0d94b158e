"""POST/GET /finetune-jobs, cancel, events (JSON and server-sent events), checkpoints, and auth."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db.models import ApiKey
from app.db.base import utcnow
from app.errors import InvalidInput
from app.main import create_app
from app.services import finetune_jobs
from tests.api.factories import (
    CUSTOM_PROMPT_SET,
    add_checkpoint,
    add_events,
    create_job,
    queued_job,
    update_job,
    upload_example_dataset,
    upload_small_dataset,
)

STUDY_HYPERPARAMETERS = {
    "lora_r": 64,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "learning_rate": 2e-4,
    "num_epochs": 10,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.03,
    "optimizer": "paged_adamw_32bit",
    "fp16": True,
}


def read_sse(body: str) -> list[dict]:
    """Server-sent events as dicts of their fields, ``data`` parsed as JSON."""
    events = []
    for block in body.strip().split("\n\n"):
        if block.startswith(":"):
            continue  # a comment: the keep-alive
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        fields["data"] = json.loads(fields["data"])
        events.append(fields)
    return events


class TestCreate:
    def test_queued_and_enqueued_once(self, client, auth, queue):
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, auth, dataset["id"])
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["id"].startswith("ftjob_")
        assert (job["status"], job["dataset_id"], job["method"], job["prompt_set_id"]) == (
            "queued", dataset["id"], "qlora", "ps_default",
        )
        assert (job["base_model"], job["attempts"], job["step"], job["adapter_id"]) == (
            "smollm2-135m-instruct", 0, 0, None,
        )
        assert queue.sent == [("finetune.run", job["id"])]
        assert client.get(f"/finetune-jobs/{job['id']}", headers=auth).json() == job

    def test_default_hyperparameters_are_the_studys(self, client, auth):
        job = queued_job(client, auth)
        assert {k: job["hyperparameters"][k] for k in STUDY_HYPERPARAMETERS} == STUDY_HYPERPARAMETERS

    def test_given_hyperparameters_are_stored(self, client, auth):
        dataset = upload_small_dataset(client, auth)
        given = {"lora_r": 8, "learning_rate": 1e-3, "max_steps": 5, "target_modules": ["q_proj"], "fp16": False}
        job = create_job(client, auth, dataset["id"], method="lora", seed=7, hyperparameters=given).json()
        assert {k: job["hyperparameters"][k] for k in given} == given
        assert job["hyperparameters"]["lora_alpha"] == 16
        assert (job["method"], job["seed"]) == ("lora", 7)

    def test_custom_prompt_set(self, client, auth):
        prompt_set_id = client.post("/prompt-sets", headers=auth, json=CUSTOM_PROMPT_SET).json()["id"]
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, auth, dataset["id"], prompt_set_id=prompt_set_id)
        assert response.status_code == 201, response.text
        assert response.json()["prompt_set_id"] == prompt_set_id


class TestCreateInvalid:
    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({"hyperparameters": {"lora_rank": 8}}, "lora_rank"),
            ({"hyperparameters": {"learning_rate": -1e-4}}, "learning_rate"),
            ({"hyperparameters": {"optimizer": "adam"}}, "optimizer"),
            ({"hyperparameters": {"target_modules": []}}, "target_modules"),
            ({"method": "gpt-finetune"}, "method"),
            ({"seed": -1}, "seed"),
        ],
        ids=["unknown_key", "negative_lr", "unknown_optimizer", "empty_target_modules", "method", "seed"],
    )
    def test_bad_body_is_422(self, client, auth, queue, body, fragment):
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, auth, dataset["id"], **body)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert fragment in response.json()["detail"]
        assert queue.sent == []

    def test_unknown_base_model_is_422_naming_it(self, client, auth, queue):
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, auth, dataset["id"], base_model="acme/no-such-model")
        assert response.status_code == 422
        assert response.json()["error"] == "UnknownModel"
        assert "acme/no-such-model" in response.json()["detail"]
        assert queue.sent == []

    def test_batch_tokens_over_the_limit_are_422(self, client, auth, queue):
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, auth, dataset["id"], hyperparameters={"batch_size": 256, "max_seq_length": 32768})
        assert response.status_code == 422, response.text
        body = response.json()
        assert (body["parameter"], body["value"], body["limit"]) == ("batch_size x max_seq_length", 256 * 32768, 65_536)
        assert "SYNTHAUG_MAX_TRAIN_BATCH_TOKENS" in body["detail"]
        assert queue.sent == [] and client.get("/finetune-jobs", headers=auth).json()["data"] == []

    def test_unknown_dataset_is_404(self, client, auth, queue):
        response = create_job(client, auth, "ds_missing")
        assert response.status_code == 404
        assert response.json() == {"error": "NotFound", "detail": "dataset 'ds_missing' not found"}
        assert queue.sent == []

    def test_other_tenants_dataset_is_404(self, client, auth, other_auth, queue):
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, other_auth, dataset["id"])
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"
        assert queue.sent == []

    def test_other_tenants_prompt_set_is_404(self, client, auth, other_auth):
        prompt_set_id = client.post("/prompt-sets", headers=auth, json=CUSTOM_PROMPT_SET).json()["id"]
        dataset = upload_small_dataset(client, other_auth)
        response = create_job(client, other_auth, dataset["id"], prompt_set_id=prompt_set_id)
        assert response.status_code == 404
        assert prompt_set_id in response.json()["detail"]


class TestEnqueueAfterCommit:
    def test_enqueued_after_commit_and_before_the_response(self, settings, db, queue, auth, monkeypatch):
        """A worker must find the row, and a client holding a 201 must find the job."""
        connection = db.sessionmaker.kw["bind"]
        order: list[str] = []
        enqueue = queue.enqueue

        def recording_enqueue(task_name: str, object_id: str) -> None:
            # Each request's transaction is a savepoint on the test connection: released = committed.
            order.append("enqueue (committed)" if not connection.in_nested_transaction() else "enqueue (open)")
            enqueue(task_name, object_id)

        monkeypatch.setattr(queue, "enqueue", recording_enqueue)
        app = create_app(settings, db=db)

        async def recording_app(scope, receive, send):
            async def recording_send(message):
                if message["type"] == "http.response.start":
                    order.append(f"response {message['status']}")
                await send(message)

            await app(scope, receive, recording_send)

        with TestClient(recording_app) as client:
            dataset_id = upload_small_dataset(client, auth)["id"]
            order.clear()
            assert create_job(client, auth, dataset_id).status_code == 201
        assert order == ["enqueue (committed)", "response 201"]

    def test_rolled_back_request_enqueues_nothing(self, client, auth, queue, monkeypatch):
        dataset = upload_small_dataset(client, auth)
        create = finetune_jobs.create

        def create_then_fail(*args, **kwargs):
            create(*args, **kwargs)
            raise InvalidInput("failed after the job was added")

        monkeypatch.setattr(finetune_jobs, "create", create_then_fail)
        assert create_job(client, auth, dataset["id"]).status_code == 422
        assert queue.sent == []
        assert client.get("/finetune-jobs", headers=auth).json()["data"] == []


class TestIdempotency:
    def test_same_key_returns_the_same_job_and_enqueues_once(self, client, auth, queue):
        dataset = upload_small_dataset(client, auth)
        first = create_job(client, auth, dataset["id"], key="run-1")
        second = create_job(client, auth, dataset["id"], key="run-1")
        assert (first.status_code, second.status_code) == (201, 200)
        assert second.json()["id"] == first.json()["id"]
        assert queue.sent == [("finetune.run", first.json()["id"])]
        assert len(client.get("/finetune-jobs", headers=auth).json()["data"]) == 1

    @pytest.mark.parametrize(
        "change",
        [{"method": "lora"}, {"seed": 1}, {"hyperparameters": {"learning_rate": 1e-3}}, {"base_model": "other"}],
        ids=["method", "seed", "hyperparameters", "base_model"],
    )
    def test_same_key_with_a_different_body_is_409(self, client, auth, queue, change):
        dataset = upload_small_dataset(client, auth)
        first = create_job(client, auth, dataset["id"], key="run-1")
        response = create_job(client, auth, dataset["id"], key="run-1", **change)
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "Conflict"
        assert "run-1" in response.json()["detail"]
        assert queue.sent == [("finetune.run", first.json()["id"])]

    def test_keys_are_per_tenant(self, client, auth, other_auth):
        first = create_job(client, auth, upload_small_dataset(client, auth)["id"], key="run-1")
        other = create_job(client, other_auth, upload_small_dataset(client, other_auth)["id"], key="run-1")
        assert (first.status_code, other.status_code) == (201, 201)
        assert first.json()["id"] != other.json()["id"]


class TestCancel:
    def test_queued_job_is_cancelled_at_once_and_its_message_revoked(self, client, auth, queue):
        job = queued_job(client, auth)
        response = client.post(f"/finetune-jobs/{job['id']}/cancel", headers=auth)
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["cancel_requested"]) == ("cancelled", True)
        assert response.json()["finished_at"] is not None
        events = client.get(f"/finetune-jobs/{job['id']}/events", headers=auth).json()["data"]
        assert events[-1]["message"] == "cancelled before it started"
        assert queue.revoked == [("finetune.run", job["id"])]

    def test_running_job_is_asked_to_stop(self, client, auth, db, queue):
        job = queued_job(client, auth)
        update_job(db, job["id"], status="running", started_at=utcnow())
        response = client.post(f"/finetune-jobs/{job['id']}/cancel", headers=auth)
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
        assert queue.revoked == []  # cooperative: the worker stops after its current step

    @pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
    def test_finished_job_is_409(self, client, auth, db, status):
        job = queued_job(client, auth)
        update_job(db, job["id"], status=status, finished_at=utcnow())
        response = client.post(f"/finetune-jobs/{job['id']}/cancel", headers=auth)
        assert response.status_code == 409
        assert response.json()["error"] == "JobStateError"
        assert status in response.json()["detail"]

    def test_other_tenant_is_404(self, client, auth, other_auth):
        job = queued_job(client, auth)
        assert client.post(f"/finetune-jobs/{job['id']}/cancel", headers=other_auth).status_code == 404
        assert client.get(f"/finetune-jobs/{job['id']}", headers=auth).json()["status"] == "queued"


class TestEvents:
    def test_pages_by_after(self, client, auth, db):
        job = queued_job(client, auth)
        ids = [client.get(f"/finetune-jobs/{job['id']}/events", headers=auth).json()["data"][0]["id"]]
        ids += add_events(db, job["id"], 4)
        url = f"/finetune-jobs/{job['id']}/events"
        first = client.get(url, headers=auth, params={"limit": 3}).json()
        assert [e["id"] for e in first["data"]] == ids[:3]
        assert first["data"][0]["message"] == "job queued"
        assert first["data"][1]["kind"] == "loss" and first["data"][1]["data"] == {"step": 0, "loss": 2.0}
        assert first["next_cursor"] == str(ids[2])
        rest = client.get(url, headers=auth, params={"limit": 3, "after": first["next_cursor"]}).json()
        assert [e["id"] for e in rest["data"]] == ids[3:]
        assert rest["next_cursor"] is None
        assert client.get(url, headers=auth, params={"after": ids[-1]}).json() == {"data": [], "next_cursor": None}

    def test_last_full_page_has_no_cursor(self, client, auth, db):
        job = queued_job(client, auth)
        add_events(db, job["id"], 3)
        page = client.get(f"/finetune-jobs/{job['id']}/events", headers=auth, params={"limit": 4}).json()
        assert (len(page["data"]), page["next_cursor"]) == (4, None)

    def test_other_tenant_is_404(self, client, auth, other_auth):
        job = queued_job(client, auth)
        assert client.get(f"/finetune-jobs/{job['id']}/events", headers=other_auth).status_code == 404


class TestEventStream:
    def test_finished_job_streams_its_events_then_end(self, client, auth, db):
        job = queued_job(client, auth)
        ids = add_events(db, job["id"], 2)
        update_job(db, job["id"], status="succeeded", finished_at=utcnow())
        response = client.get(
            f"/finetune-jobs/{job['id']}/events", headers={**auth, "Accept": "text/event-stream"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response.text)
        assert [e["event"] for e in events] == ["message", "loss", "loss", "end"]
        assert [int(e["id"]) for e in events[1:3]] == ids
        assert events[1]["data"]["data"] == {"step": 0, "loss": 2.0}
        assert events[-1]["data"] == {"status": "succeeded"}

    def test_resumes_after_an_event_id(self, client, auth, db):
        job = queued_job(client, auth)
        ids = add_events(db, job["id"], 3)
        update_job(db, job["id"], status="failed", error="out of memory", finished_at=utcnow())
        response = client.get(
            f"/finetune-jobs/{job['id']}/events",
            headers={**auth, "Accept": "text/event-stream"},
            params={"after": ids[0]},
        )
        events = read_sse(response.text)
        assert [e.get("id") for e in events] == [str(ids[1]), str(ids[2]), None]
        assert events[-1] == {"event": "end", "data": {"status": "failed"}}

    def test_other_tenant_is_404_before_streaming(self, client, auth, other_auth):
        job = queued_job(client, auth)
        response = client.get(
            f"/finetune-jobs/{job['id']}/events", headers={**other_auth, "Accept": "text/event-stream"}
        )
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"


class TestEventStreamBounds:
    def test_a_quiet_stream_keeps_alive_then_ends_with_a_reconnect_event(self, settings, db, auth):
        bounded = settings.model_copy(update={"event_stream_poll_s": 0.02, "event_stream_keepalive_s": 0.1,
                                              "event_stream_max_s": 0.6})
        with TestClient(create_app(bounded, db=db)) as client:
            job = queued_job(client, auth)
            started = time.monotonic()
            response = client.get(f"/finetune-jobs/{job['id']}/events", headers={**auth, "Accept": "text/event-stream"})
            elapsed = time.monotonic() - started
        assert 0.6 <= elapsed < 5
        assert response.text.count(": keep-alive\n\n") >= 3
        events = read_sse(response.text)
        assert [e["event"] for e in events] == ["message", "reconnect"]
        assert events[-1]["data"]["after"] == int(events[0]["id"])
        assert "Last-Event-ID" in events[-1]["data"]["detail"]

    def test_last_event_id_resumes_after_that_event(self, client, auth, db):
        job = queued_job(client, auth)
        ids = add_events(db, job["id"], 3)
        update_job(db, job["id"], status="succeeded", finished_at=utcnow())
        response = client.get(f"/finetune-jobs/{job['id']}/events",
                              headers={**auth, "Accept": "text/event-stream", "Last-Event-ID": str(ids[1])})
        assert [e.get("id") for e in read_sse(response.text)] == [str(ids[2]), None]

    def test_a_last_event_id_that_is_not_an_id_is_refused(self, client, auth):
        job = queued_job(client, auth)
        response = client.get(f"/finetune-jobs/{job['id']}/events",
                              headers={**auth, "Accept": "text/event-stream", "Last-Event-ID": "abc"})
        assert response.status_code == 422
        assert "last-event-id" in response.json()["detail"]


class TestCheckpoints:
    def test_listed_by_step(self, client, auth, db):
        job = queued_job(client, auth)
        assert client.get(f"/finetune-jobs/{job['id']}/checkpoints", headers=auth).json()["data"] == []
        for step, epoch in ((20, 2.0), (10, 1.0)):
            add_checkpoint(db, job["id"], step, epoch)
        checkpoints = client.get(f"/finetune-jobs/{job['id']}/checkpoints", headers=auth).json()["data"]
        assert [(c["step"], c["epoch"]) for c in checkpoints] == [(10, 1.0), (20, 2.0)]
        assert checkpoints[0]["remote_model"] is None and "path" not in checkpoints[0]

    def test_other_tenant_is_404(self, client, auth, other_auth):
        job = queued_job(client, auth)
        assert client.get(f"/finetune-jobs/{job['id']}/checkpoints", headers=other_auth).status_code == 404


class TestList:
    def test_status_filter_and_cursor(self, client, auth):
        dataset_id = upload_small_dataset(client, auth)["id"]
        ids = [create_job(client, auth, dataset_id).json()["id"] for _ in range(3)]
        client.post(f"/finetune-jobs/{ids[1]}/cancel", headers=auth)
        queued = client.get("/finetune-jobs", headers=auth, params={"status": "queued"}).json()
        assert [j["id"] for j in queued["data"]] == [ids[2], ids[0]]
        cancelled = client.get("/finetune-jobs", headers=auth, params={"status": "cancelled"}).json()
        assert [j["id"] for j in cancelled["data"]] == [ids[1]]
        first = client.get("/finetune-jobs", headers=auth, params={"limit": 2}).json()
        second = client.get("/finetune-jobs", headers=auth, params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [j["id"] for j in first["data"] + second["data"]] == ids[::-1]
        assert second["next_cursor"] is None

    def test_other_tenant_sees_none(self, client, auth, other_auth):
        job = queued_job(client, auth)
        assert client.get("/finetune-jobs", headers=other_auth).json() == {"data": [], "next_cursor": None}
        assert client.get(f"/finetune-jobs/{job['id']}", headers=other_auth).status_code == 404


class TestAuth:
    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer sk_syn_wrong"}, {"X-API-Key": "sk_syn_wrong"}, {"Authorization": "Basic abc"}],
        ids=["missing", "wrong_bearer", "wrong_x_api_key", "not_bearer"],
    )
    def test_refused_with_401(self, client, headers):
        for method, path in (("get", "/finetune-jobs"), ("post", "/finetune-jobs")):
            response = client.request(method, path, headers=headers, json={"dataset_id": "ds_x"})
            assert response.status_code == 401
            assert response.json()["error"] == "Unauthorized"

    def test_revoked_key_is_401(self, client, auth, db):
        with db.transaction() as session:
            session.execute(update(ApiKey).values(revoked_at=utcnow()))
        response = client.get("/finetune-jobs", headers=auth)
        assert response.status_code == 401
        assert "revoked" in response.json()["detail"]


@pytest.fixture
def prepared_client(settings, db, cache_dir):
    """An API whose server has the base model prepared, so it can count tokens before queueing."""
    from worker.models import materialize_base_model

    materialize_base_model("smollm2-135m-instruct", cache_dir)
    prepared = settings.model_copy(update={"cache_dir": cache_dir})
    with TestClient(create_app(prepared, db=db)) as test_client:
        yield test_client


class TestExampleLengths:
    """Examples longer than max_seq_length lose their end token: refused unless truncation is asked for."""

    def test_too_long_examples_are_refused_with_the_count_and_the_length_needed(self, prepared_client, auth, queue):
        dataset = upload_example_dataset(prepared_client, auth)
        response = create_job(prepared_client, auth, dataset["id"], hyperparameters={"max_seq_length": 160})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "InvalidInput"
        assert body["too_long"] > 0 and body["needed"] > 160
        assert f"{body['too_long']} of 102 train/validation examples" in body["detail"]
        assert f"at least {body['needed']}" in body["detail"] and "allow_truncation" in body["detail"]
        assert queue.sent == []

    def test_the_length_needed_is_accepted(self, prepared_client, auth):
        dataset = upload_example_dataset(prepared_client, auth)
        needed = create_job(prepared_client, auth, dataset["id"], hyperparameters={"max_seq_length": 16}).json()["needed"]
        assert create_job(prepared_client, auth, dataset["id"], hyperparameters={"max_seq_length": needed - 1}).status_code == 422
        assert create_job(prepared_client, auth, dataset["id"], hyperparameters={"max_seq_length": needed}).status_code == 201

    def test_allow_truncation_accepts_the_job(self, prepared_client, auth, queue):
        dataset = upload_example_dataset(prepared_client, auth)
        response = create_job(prepared_client, auth, dataset["id"],
                              hyperparameters={"max_seq_length": 64, "allow_truncation": True})
        assert response.status_code == 201, response.text
        assert response.json()["hyperparameters"]["allow_truncation"] is True
        assert len(queue.sent) == 1

    def test_without_the_tokenizer_the_job_is_queued_for_the_worker_to_check(self, client, auth, queue):
        dataset = upload_example_dataset(client, auth)
        assert create_job(client, auth, dataset["id"], hyperparameters={"max_seq_length": 64}).status_code == 201
        assert len(queue.sent) == 1


class TestBaseModelDirectories:
    """A base_model given as a directory must lie under SYNTHAUG_MODELS_DIR (or the converted-model cache)."""

    @staticmethod
    def model_at(path):
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 2}))
        return path

    def test_a_directory_under_the_models_root(self, client, auth, settings, queue):
        local = self.model_at(settings.resolved_models_dir / "tiny")
        dataset = upload_small_dataset(client, auth)
        response = create_job(client, auth, dataset["id"], base_model=str(local))
        assert response.status_code == 201, response.text
        assert response.json()["base_model"] == str(local) and queue.sent

    @pytest.mark.parametrize("name", ["/etc", "{tmp}/outside", "{models}/../outside", "tiny", "~nosuchuser", "x" * 300])
    def test_anything_else_is_422_naming_the_allowed_roots(self, client, auth, settings, queue, tmp_path, name):
        self.model_at(tmp_path / "outside")
        self.model_at(settings.resolved_models_dir / "tiny")
        dataset = upload_small_dataset(client, auth)
        name = name.format(tmp=tmp_path, models=settings.resolved_models_dir)
        response = create_job(client, auth, dataset["id"], base_model=name)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "UnknownModel"
        assert str(settings.resolved_models_dir) in response.json()["detail"]
        assert queue.sent == []
