"""OpenAISampler against the fake OpenAI API on loopback, through the real ``openai`` SDK (no database)."""

from __future__ import annotations

from typing import Iterator

import pytest
from pydantic import SecretStr

from app.domain.prompts import default_prompt_set
from app.domain.sampling import FinishReason, SamplingParams
from app.settings import Settings
from tests.conftest import TEST_PEPPER
from tests.fakes.openai_api import FINE_TUNABLE, FakeOpenAI, running_fake_openai
from worker.sampling import build_sampler
from worker.sampling.base import SampleRequest, SamplerError, SampleTarget
from worker.sampling.openai import OpenAISampler

BASE = FINE_TUNABLE[0]
MESSAGES = default_prompt_set().inference_messages("impaired")
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.2, max_tokens=60,
                        stop=["\n\n"], seed=3)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai() as running:
        yield running


def settings_for(fake: FakeOpenAI, tmp_path, **overrides) -> Settings:
    values = dict(openai_api_key=SecretStr(fake.api_key), openai_base_url=fake.base_url, openai_max_retries=2,
                  openai_concurrency=3, openai_timeout_s=10)
    return Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, **{**values, **overrides})


@pytest.fixture
def sampler(fake, tmp_path) -> OpenAISampler:
    return OpenAISampler(settings_for(fake, tmp_path))


def target(model: str | None, kind: str = "openai") -> SampleTarget:
    return SampleTarget("ad_openai", None, BASE, "none", kind=kind, remote_model=model)


def requests_for(seeds) -> list[SampleRequest]:
    return [SampleRequest.of(MESSAGES, seed) for seed in seeds]


class TestRequests:
    def test_texts_come_back_in_request_order_from_the_fine_tuned_model(self, tmp_path):
        with running_fake_openai(chat_delay_s=0.05) as fake:  # later seeds answer sooner
            model = fake.fine_tune()
            seeds = [2**40 + i for i in range(8)]
            completions = OpenAISampler(settings_for(fake, tmp_path)).sample(target(model), requests_for(seeds), PARAMS)
            sent = [r.json for r in fake.requests_to("/chat/completions")]
            expected = fake_texts(fake, model, seeds)

        by_seed = {body["seed"]: body for body in sent}
        assert sorted(by_seed) == seeds
        assert [c.text for c in completions] == expected
        assert {body["model"] for body in sent} == {model} and BASE not in {body["model"] for body in sent}

    def test_each_request_carries_the_prompt_set_messages_and_the_openai_parameters(self, fake, sampler):
        model = fake.fine_tune()
        sampler.sample(target(model), requests_for([5]), PARAMS)

        body = fake.requests_to("/chat/completions")[0].json
        assert body == {"model": model, "messages": MESSAGES, "n": 1, "temperature": 0.7, "top_p": 0.9, "seed": 5,
                        "max_completion_tokens": 60, "stop": ["\n\n"]}

    def test_no_stop_strings_send_no_stop(self, fake, sampler):
        sampler.sample(target(fake.fine_tune()), requests_for([5]), PARAMS.model_copy(update={"stop": []}))
        assert "stop" not in fake.requests_to("/chat/completions")[0].json

    def test_concurrency_is_bounded_by_the_setting(self, tmp_path):
        with running_fake_openai(chat_delay_s=0.1) as fake:
            sampler = OpenAISampler(settings_for(fake, tmp_path, openai_concurrency=3))
            completions = sampler.sample(target(fake.fine_tune()), requests_for(range(4, 16)), PARAMS)
        assert len(completions) == 12 and fake.max_in_flight == 3

    def test_a_chunk_is_twice_the_concurrency(self, sampler):
        assert sampler.chunk_size(target("ft:x"), PARAMS) == 6

    def test_no_requests_send_nothing(self, fake, sampler):
        assert sampler.sample(target(fake.fine_tune()), [], PARAMS) == [] and fake.requests_to("/chat") == []


class TestCompletions:
    def test_usage_and_fingerprint_are_recorded(self, fake, sampler):
        model = fake.fine_tune()
        [completion] = sampler.sample(target(model), requests_for([9]), PARAMS)

        answer = fake.requests_to("/chat/completions")[0]
        assert completion.finish_reason == FinishReason.STOP and completion.tokens == len(completion.text.split())
        assert completion.details["model"] == model and completion.details["system_fingerprint"].startswith("fp_")
        assert completion.details["completion_tokens"] == completion.tokens
        assert completion.details["prompt_tokens"] > 0 and answer.status == 200

    def test_a_cut_sample_ends_with_length(self, fake, sampler):
        [completion] = sampler.sample(target(fake.fine_tune()), requests_for([9]),
                                      PARAMS.model_copy(update={"max_tokens": 4}))
        assert completion.finish_reason == FinishReason.LENGTH and completion.tokens == 4

    def test_a_content_filter_ending_counts_as_cut(self, tmp_path):
        with running_fake_openai(chat_finish_reason="content_filter") as fake:
            [completion] = OpenAISampler(settings_for(fake, tmp_path)).sample(
                target(fake.fine_tune()), requests_for([9]), PARAMS)
        assert completion.finish_reason == FinishReason.LENGTH
        assert completion.details["finish_reason"] == "content_filter"

    def test_an_unexpected_finish_reason_is_an_error(self, tmp_path):
        with running_fake_openai(chat_finish_reason="tool_calls") as fake:
            sampler = OpenAISampler(settings_for(fake, tmp_path))
            with pytest.raises(SamplerError, match="finish_reason 'tool_calls'"):
                sampler.sample(target(fake.fine_tune()), requests_for([9]), PARAMS)


class TestFailures:
    def test_a_429_is_retried_after_retry_after_ms(self, fake, sampler):
        model = fake.fine_tune()
        fake.fail_next("/chat/completions", 429, times=2, retry_after_ms=10)
        [completion] = sampler.sample(target(model), requests_for([9]), PARAMS)

        assert [(r.status, r.retry_count) for r in fake.requests_to("/chat/completions")] == [
            (429, 0), (429, 1), (200, 2)]
        assert [completion.text] == fake_texts(fake, model, [9])

    def test_retries_spent_is_a_sampler_error_naming_the_model(self, fake, sampler):
        model = fake.fine_tune()
        fake.fail_next("/chat/completions", 503, times=3, retry_after_ms=1)
        with pytest.raises(SamplerError, match=r"503 after 2 retries to sampling from ft:.*overloaded") as caught:
            sampler.sample(target(model), requests_for([9]), PARAMS)
        assert model in str(caught.value) and len(fake.requests_to("/chat/completions")) == 3

    def test_a_wrong_key_is_a_sampler_error_without_the_key(self, fake, tmp_path):
        wrong = "sk-this-key-is-wrong-0123456789"
        sampler = OpenAISampler(settings_for(fake, tmp_path, openai_api_key=SecretStr(wrong)))
        with pytest.raises(SamplerError, match="401 to sampling from ft:.*SYNTHAUG_OPENAI_API_KEY") as caught:
            sampler.sample(target(fake.fine_tune()), requests_for([9]), PARAMS)
        assert wrong not in str(caught.value) and len(fake.requests_to("/chat/completions")) == 1

    def test_an_echoed_key_is_redacted(self, fake, sampler):
        fake.fail_next("/chat/completions", 400, body={"message": f"bad key {fake.api_key}", "type": "x",
                                                       "param": None, "code": None})
        with pytest.raises(SamplerError, match=r"bad key \[redacted\]") as caught:
            sampler.sample(target(fake.fine_tune()), requests_for([9]), PARAMS)
        assert fake.api_key not in str(caught.value)

    def test_an_unknown_model_is_a_sampler_error(self, fake, sampler):
        gone = f"ft:{BASE}:synthaug-test:gone:abcd1234"
        with pytest.raises(SamplerError, match=f"404 to sampling from {gone}: The model .* does not exist"):
            sampler.sample(target(gone), requests_for([9]), PARAMS)

    def test_an_unreachable_api_is_a_sampler_error(self, tmp_path):
        with running_fake_openai() as fake:
            settings = settings_for(fake, tmp_path, openai_max_retries=0)
        with pytest.raises(SamplerError, match="unreachable after 0 retries"):
            OpenAISampler(settings).sample(target("ft:x:y::z"), requests_for([9]), PARAMS)


class TestRefusals:
    @pytest.mark.parametrize("refused", [target(None), target("ft:x", kind="peft"), target(BASE),
                                         target("gpt-4o-mini")])
    def test_a_target_without_a_fine_tuned_model_is_refused_before_any_request(self, fake, sampler, refused):
        with pytest.raises(SamplerError, match="ad_openai"):
            sampler.sample(refused, requests_for([9]), PARAMS)
        assert fake.requests == []

    def test_a_temperature_beyond_openais_range_is_refused(self, fake, sampler):
        with pytest.raises(SamplerError, match="temperature of at most 2"):
            sampler.sample(target(fake.fine_tune()), requests_for([9]), PARAMS.model_copy(update={"temperature": 3}))
        assert fake.requests == []

    def test_no_key_names_the_setting(self, tmp_path):
        with pytest.raises(SamplerError, match="SYNTHAUG_OPENAI_API_KEY"):
            OpenAISampler(Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, openai_api_key=None))

    def test_the_registry_builds_it(self, fake, tmp_path):
        assert isinstance(build_sampler("openai", settings_for(fake, tmp_path)), OpenAISampler)


def fake_texts(fake: FakeOpenAI, model: str, seeds) -> list[str]:
    """What the fake answers for each seed, asked directly (not through the sampler)."""
    client = fake.client()
    answers = [client.chat.completions.create(model=model, messages=MESSAGES, seed=seed,
                                              max_completion_tokens=PARAMS.max_tokens, stop=PARAMS.stop)
               for seed in seeds]
    return [answer.choices[0].message.content.strip() for answer in answers]
