"""The fake OpenAI API (tests/fakes) driven by the real ``openai`` SDK, as the service's code drives it."""

from __future__ import annotations

import io
import json
import time
from typing import Iterator

import openai
import pytest

from tests.fakes.openai_api import FINE_TUNABLE, FakeOpenAI, running_fake_openai

BASE = FINE_TUNABLE[0]


def jsonl(n: int) -> bytes:
    line = {"messages": [{"role": "system", "content": "You are a participant."},
                         {"role": "user", "content": "Describe the picture."},
                         {"role": "assistant", "content": "um the boy is on the stool and uh he falls"}]}
    return ("\n".join(json.dumps(line) for _ in range(n)) + "\n").encode()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as running:
        yield running


@pytest.fixture
def client(fake) -> openai.OpenAI:
    return fake.client()


def upload(client, n: int = 12, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(jsonl(n))), purpose="fine-tune").id


def create_job(client, **overrides):
    arguments = {"model": BASE, "training_file": upload(client), "suffix": "adress",
                 "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}}
    return client.fine_tuning.jobs.create(**{**arguments, **overrides})


class TestFiles:
    def test_an_upload_answers_a_file_object_and_keeps_the_bytes(self, fake, client):
        uploaded = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(12))), purpose="fine-tune")

        assert (uploaded.object, uploaded.purpose, uploaded.filename, uploaded.status) == (
            "file", "fine-tune", "train.jsonl", "processed")
        assert uploaded.id.startswith("file-") and uploaded.bytes == len(jsonl(12))
        assert fake.file_content(uploaded.id) == jsonl(12)
        assert len(fake.file_jsonl(uploaded.id)) == 12
        assert client.files.retrieve(uploaded.id).id == uploaded.id
        assert fake.requests_to("/files")[0].form == {"purpose": "fine-tune", "file": "train.jsonl"}

    def test_an_unknown_purpose_is_a_400(self, client):
        with pytest.raises(openai.BadRequestError) as caught:
            client.files.create(file=("t.jsonl", io.BytesIO(b"{}\n")), purpose="nonsense")
        assert caught.value.param == "purpose"


class TestCreateJob:
    def test_a_created_job_is_validating_its_files_with_what_was_sent(self, fake, client):
        job = create_job(client, seed=7, metadata={"synthaug_job": "ft_1"})

        assert job.object == "fine_tuning.job" and job.status == "validating_files"
        assert (job.model, job.seed, job.user_provided_suffix) == (BASE, 7, "adress")
        assert job.metadata == {"synthaug_job": "ft_1"}
        assert job.method.type == "supervised" and job.method.supervised.hyperparameters.n_epochs == 3
        assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 1
        assert job.fine_tuned_model is None and job.trained_tokens is None and job.error is None
        assert fake.requests_to("/fine_tuning/jobs", "POST")[0].json["method"]["type"] == "supervised"

    def test_auto_epochs_follow_the_example_count(self, client):
        job = create_job(client, training_file=upload(client, n=10), method={"type": "supervised"})
        assert job.hyperparameters.n_epochs == 10

    @pytest.mark.parametrize("overrides, param", [
        ({"training_file": "file-missing"}, "training_file"),
        ({"validation_file": "file-missing"}, "validation_file"),
        ({"model": "gpt-3-turbo-unknown"}, "model"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
         "method.supervised.hyperparameters.n_epochs"),
    ])
    def test_what_the_api_refuses_is_a_400_naming_the_parameter(self, fake, client, overrides, param):
        with pytest.raises(openai.BadRequestError) as caught:
            create_job(client, **overrides)
        assert caught.value.param == param and caught.value.type == "invalid_request_error"
        assert fake.job_ids() == []

    def test_an_unknown_argument_is_refused(self, client):
        with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: epochs"):
            create_job(client, extra_body={"epochs": 3})


class TestProgression:
    def test_retrieves_walk_the_job_to_success(self, fake, client):
        job = create_job(client, validation_file=upload(client, name="valid.jsonl"))
        seen, estimates = [], []
        while job.status not in ("succeeded", "failed"):
            job = client.fine_tuning.jobs.retrieve(job.id)
            seen.append(job.status)
            estimates.append(job.estimated_finish)

        assert seen == ["queued"] + ["running"] * 6 + ["succeeded"]
        assert all(e is not None for e, s in zip(estimates, seen) if s == "running") and estimates[-1] is None
        assert job.fine_tuned_model == f"ft:{BASE}:synthaug-test:adress:{job.id[6:14]}"
        assert job.trained_tokens > 0 and job.finished_at is not None
        assert fake.file_content(job.result_files[0]).startswith(b"step,train_loss")
        metrics = [e for e in fake.events(job.id) if e["type"] == "metrics"]
        assert [m["data"]["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
        assert set(metrics[0]["data"]) == {"step", "train_loss", "train_mean_token_accuracy", "total_steps",
                                           "valid_loss", "valid_mean_token_accuracy"}
        assert metrics[0]["message"].startswith("Step 1/6: training loss=")
        assert [c["step_number"] for c in fake.checkpoints(job.id)] == [2, 4, 6]
        assert fake.events(job.id)[-1]["message"] == "The job has successfully completed"

    def test_a_scripted_failure_carries_the_error(self):
        with running_fake_openai(fail_at_tick=3) as fake:
            client = fake.client()
            job = create_job(client)
            for _ in range(3):
                job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "failed" and job.error.code == "invalid_training_file"
        assert job.error.param == "training_file" and "file format error" in job.error.message
        assert fake.events(job.id)[-1]["level"] == "error"

    def test_cancel_ends_the_job_for_good(self, fake, client):
        job = create_job(client)
        client.fine_tuning.jobs.retrieve(job.id)

        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"

    def test_a_finished_job_cannot_be_cancelled(self, fake, client):
        job = create_job(client)
        fake.finish(job.id)
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.cancel(job.id)

    def test_a_paused_job_waits_until_resumed(self, fake, client):
        job = create_job(client)
        fake.advance(job.id, 3)  # running, step 2
        assert client.fine_tuning.jobs.pause(job.id).status == "paused"
        assert [client.fine_tuning.jobs.retrieve(job.id).status for _ in range(3)] == ["paused"] * 3

        assert client.fine_tuning.jobs.resume(job.id).status == "running"
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        assert [e["data"]["step"] for e in fake.events(job.id) if e["type"] == "metrics"] == [1, 2, 3]

    def test_only_a_running_job_pauses(self, client):
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.pause(create_job(client).id)

    def test_an_unknown_job_is_a_404(self, client):
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-missing")


class TestLists:
    def test_events_auto_paginate_newest_first(self):
        with running_fake_openai(steps=30, steps_per_tick=10) as fake:
            client = fake.client()
            job = create_job(client)
            fake.finish(job.id)
            listed = list(client.fine_tuning.jobs.list_events(job.id))
            pages = [r.query for r in fake.requests_to(f"/fine_tuning/jobs/{job.id}/events")]

        assert [e.id for e in listed] == [e["id"] for e in reversed(fake.events(job.id))]
        assert len(listed) > 40 and listed[0].message == "The job has successfully completed"
        assert pages[0] == {} and pages[1] == {"after": listed[19].id} and len(pages) == 3

    def test_checkpoints_auto_paginate_with_first_and_last_ids(self, fake, client):
        job = create_job(client)
        fake.finish(job.id)
        page = client.fine_tuning.jobs.checkpoints.list(job.id, limit=2)

        assert [c.step_number for c in page.data] == [6, 4] and page.has_more
        assert (page.first_id, page.last_id) == (page.data[0].id, page.data[1].id)
        assert [c.step_number for c in page] == [6, 4, 2]
        assert page.data[0].fine_tuned_model_checkpoint.endswith(":ckpt-step-6")

    def test_jobs_filter_by_metadata_and_paginate(self, client):
        mine = [create_job(client, metadata={"synthaug_job": f"ft_{i}"}).id for i in range(3)]
        other = create_job(client, metadata={"synthaug_job": "other"}).id

        found = client.fine_tuning.jobs.list(metadata={"synthaug_job": "ft_1"})
        assert [j.id for j in found.data] == [mine[1]] and not found.has_more
        first = client.fine_tuning.jobs.list(limit=3)
        assert first.has_more and [j.id for j in first.data] == [other, mine[2], mine[1]]
        assert [j.id for j in first] == [other, mine[2], mine[1], mine[0]]


class TestChat:
    def test_a_fine_tuned_model_answers_deterministically(self, fake, client):
        model = fake.fine_tune()
        messages = [{"role": "system", "content": "You are a participant."}, {"role": "user", "content": "Go."}]
        answer = client.chat.completions.create(model=model, messages=messages, seed=11)
        again = client.chat.completions.create(model=model, messages=messages, seed=11)
        other = client.chat.completions.create(model=model, messages=messages, seed=12)

        text = answer.choices[0].message.content
        assert text == again.choices[0].message.content != other.choices[0].message.content
        assert len(text.split()) >= 12 and answer.choices[0].finish_reason == "stop"
        assert answer.model == model and answer.system_fingerprint.startswith("fp_")
        assert answer.usage.completion_tokens == len(text.split())

    def test_max_completion_tokens_cuts_with_length(self, fake, client):
        answer = client.chat.completions.create(model=fake.fine_tune(), messages=[{"role": "user", "content": "Go."}],
                                                seed=1, max_completion_tokens=5)
        assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 5

    def test_a_base_model_is_not_found(self, fake, client):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "Go."}])
        assert caught.value.code == "model_not_found"

    def test_a_checkpoint_model_answers(self, fake, client):
        job = create_job(client)
        fake.finish(job.id)
        checkpoint = fake.checkpoints(job.id)[0]["fine_tuned_model_checkpoint"]
        assert client.chat.completions.create(model=checkpoint, messages=[{"role": "user", "content": "Go."}]).choices


class TestFaultsAndAuth:
    def test_a_429_is_retried_after_retry_after_ms(self, fake):
        fake.fail_next("/chat/completions", 429, times=2, retry_after_ms=20)
        client = fake.client(max_retries=2)
        model = fake.fine_tune()
        started = time.monotonic()
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Go."}])

        calls = fake.requests_to("/chat/completions")
        assert [(c.status, c.retry_count) for c in calls] == [(429, 0), (429, 1), (200, 2)]
        assert time.monotonic() - started < 1.0  # 2 × 20 ms; the SDK's own backoff would take over 1.1 s

    def test_a_429_beyond_the_retries_is_a_rate_limit_error_with_the_real_body(self, fake):
        fake.fail_next("/fine_tuning/jobs", 429, times=5, retry_after_ms=1)
        with pytest.raises(openai.RateLimitError) as caught:
            fake.client(max_retries=1).fine_tuning.jobs.list()
        assert caught.value.code == "rate_limit_exceeded" and "Rate limit reached" in caught.value.message
        assert len(fake.requests) == 2

    def test_a_500_with_a_given_body(self, fake):
        fake.fail_next("/files", 500, body={"message": "boom", "type": "server_error", "param": None, "code": None})
        with pytest.raises(openai.InternalServerError, match="boom"):
            upload(fake.client())

    def test_a_wrong_key_is_a_401_that_masks_it(self, fake):
        wrong = "sk-wrong-key-0123456789abcdef"
        with pytest.raises(openai.AuthenticationError) as caught:
            fake.client(api_key=wrong, max_retries=3).fine_tuning.jobs.list()
        assert caught.value.code == "invalid_api_key" and wrong not in str(caught.value)
        assert len(fake.requests) == 1 and fake.requests[0].status == 401
