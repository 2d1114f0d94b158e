"""Sampling through a vLLM OpenAI-compatible server, LoRA adapters loaded at run time.

Prompts are rendered here with the one prompt renderer and sent as text to the completions endpoint
(never the chat endpoint, whose template rendering is the server's), so the server samples after
exactly the tokens the adapter was trained on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Sequence, TypeVar

import openai
from openai import OpenAI

from app.domain.sampling import FinishReason, SamplingParams
from app.settings import Settings
from worker.models import load_tokenizer, materialize_base_model
from worker.prompt_format import chat_format, render_prompt
from worker.sampling.base import (
    Completion, SampleRequest, SamplerError, SampleTarget, check_adapter, map_in_order,
)

# Requests a chunk holds per request in flight: enough that the server's batch stays full while the
# slowest requests of a chunk finish, few enough that a chunk (the unit of progress and resume) stays short.
CHUNK_PER_CONCURRENT = 2
# Listing models answers at once; (un)loading an adapter waits for the engine's current step, seconds
# on a CPU. A timed-out load is retried, and the retry's "already loaded" counts as loaded.
CONTROL_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0

T = TypeVar("T")


class VLLMSampler:
    """Draws each sample as one seeded completion request; at most ``vllm_concurrency`` in flight."""

    name = "vllm"

    def __init__(self, settings: Settings):
        if not settings.vllm_base_url:
            raise SamplerError(
                "the vllm sampler needs SYNTHAUG_VLLM_BASE_URL (e.g. http://127.0.0.1:8001/v1); "
                "`synthaug vllm serve` starts a server and prints it"
            )
        self.base_url = settings.vllm_base_url.rstrip("/")
        self.cache_dir = settings.resolved_cache_dir
        self.concurrency = settings.vllm_concurrency
        self.max_loaded_adapters = settings.vllm_max_loaded_adapters
        self.max_retries = settings.vllm_max_retries
        self.timeout_s = settings.vllm_request_timeout_s
        api_key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else "unused"
        # The SDK retries connection errors, timeouts, 408, 409, 429 and 5xx itself, with exponential
        # backoff (0.5 s doubling to 8 s, with jitter, honouring Retry-After), max_retries times:
        # https://github.com/openai/openai-python#retries. Every other status fails at once.
        self._client = OpenAI(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=self.max_retries,
            timeout=openai.Timeout(self.timeout_s, connect=CONNECT_TIMEOUT_S),
        )
        self._control = self._client.with_options(
            timeout=openai.Timeout(min(self.timeout_s, CONTROL_TIMEOUT_S), connect=CONNECT_TIMEOUT_S)
        )
        # Adapters this sampler has used on the server, least recently used first.
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._tokenizers: dict[str, Any] = {}

    def chunk_size(self, target: SampleTarget, params: SamplingParams, prompt_tokens: int = 0) -> int:
        """A multiple of the concurrency; the server sizes its own batches, so there is no memory to size."""
        return CHUNK_PER_CONCURRENT * self.concurrency

    def sample(
        self, target: SampleTarget, requests: Sequence[SampleRequest], params: SamplingParams
    ) -> list[Completion]:
        """One completion per request, in request order; SamplerError once retries are spent."""
        if not requests:
            return []
        tokenizer = self._tokenizer(target.base_model)
        self._prepare(target)
        prompts = [render_prompt(tokenizer, r.message_dicts()) for r in requests]
        add_special_tokens = chat_format(tokenizer).adds_special_tokens
        return map_in_order(
            lambda pair: self._complete(target, pair[0], completion_arguments(params, pair[1].seed, add_special_tokens)),
            list(zip(prompts, requests)), self.concurrency, "vllm",
        )

    def _tokenizer(self, base_model: str) -> Any:
        with self._lock:
            if base_model not in self._tokenizers:
                self._tokenizers[base_model] = load_tokenizer(materialize_base_model(base_model, self.cache_dir))
            return self._tokenizers[base_model]

    def _prepare(self, target: SampleTarget) -> None:
        """Check the server serves the target's base model, and that the adapter is loaded there."""
        models = self._call("listing its models", lambda: self._control.models.list().data)
        roots = {m.id for m in models if getattr(m, "parent", None) is None}
        if target.base_model not in roots:
            raise SamplerError(
                f"vLLM server at {self.base_url} serves {', '.join(sorted(roots)) or 'no model'}, not "
                f"{target.base_model}, the base model of adapter {target.adapter_id}; start one for it "
                f"(`synthaug vllm serve` serves SYNTHAUG_DEFAULT_BASE_MODEL) or point SYNTHAUG_VLLM_BASE_URL at one"
            )
        if target.adapter_id in {m.id for m in models}:
            with self._lock:
                self._remember(target.adapter_id)
        else:
            self._load(target)

    def _load(self, target: SampleTarget) -> None:
        """Register the adapter on the server (already loaded counts), then unload beyond the bound."""
        # Damaged files are named here, plainly; a directory only the server can see is the server's to judge.
        if target.adapter_dir is not None and target.adapter_dir.is_dir():
            check_adapter(target)
        body = {"lora_name": target.adapter_id, "lora_path": str(target.adapter_dir)}
        with self._lock:
            try:
                self._control.post("/load_lora_adapter", body=body, cast_to=str)
            except openai.BadRequestError as exc:
                if "already been loaded" not in _server_message(exc):
                    raise self._refused(target, exc) from None
            except openai.APIStatusError as exc:
                raise self._refused(target, exc) from None
            except openai.APIConnectionError as exc:
                raise self._unreachable(exc, f"loading adapter {target.adapter_id}") from None
            self._remember(target.adapter_id)

    def _remember(self, adapter_id: str) -> None:
        """Mark the adapter most recently used and unload the least recently used beyond the bound (lock held)."""
        self._loaded[adapter_id] = None
        self._loaded.move_to_end(adapter_id)
        while len(self._loaded) > self.max_loaded_adapters:
            stale, _ = self._loaded.popitem(last=False)
            try:
                self._control.post("/unload_lora_adapter", body={"lora_name": stale}, cast_to=str)
            except openai.NotFoundError:
                pass  # gone already (a restart, or another worker unloaded it)
            except openai.APIStatusError as exc:
                raise SamplerError(
                    f"vLLM server at {self.base_url} refused to unload adapter {stale}: "
                    f"{exc.status_code} {_server_message(exc)}"
                ) from None
            except openai.APIConnectionError as exc:
                raise self._unreachable(exc, f"unloading adapter {stale}") from None

    def _complete(self, target: SampleTarget, prompt: str, arguments: dict[str, Any]) -> Completion:
        create = partial(self._client.completions.create, model=target.adapter_id, prompt=prompt, **arguments)
        try:
            response = self._call(f"sampling from adapter {target.adapter_id}", create)
        except _AdapterUnknown:
            # The server forgot the adapter (it restarted, or another worker unloaded it): load it
            # again and retry once.
            with self._lock:
                self._loaded.pop(target.adapter_id, None)
            self._load(target)
            try:
                response = self._call(f"sampling from adapter {target.adapter_id}", create)
            except _AdapterUnknown as exc:
                raise SamplerError(
                    f"vLLM server at {self.base_url} does not know adapter {target.adapter_id} even after "
                    f"loading it again: {exc}"
                ) from None
        return completion_of(response, self.base_url)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, its failures as SamplerError (or _AdapterUnknown for an unknown model)."""
        try:
            return call()
        except openai.NotFoundError as exc:
            message = _server_message(exc)
            if "does not exist" in message:
                raise _AdapterUnknown(message) from None
            raise SamplerError(f"vLLM server at {self.base_url} answered 404 to {what}: {message}") from None
        except openai.APIStatusError as exc:
            retried = f" after {self.max_retries} retries" if _retryable(exc.status_code) else ""
            raise SamplerError(
                f"vLLM server at {self.base_url} answered {exc.status_code} to {what}{retried}: {_server_message(exc)}"
            ) from None
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc, what) from None

    def _refused(self, target: SampleTarget, exc: openai.APIStatusError) -> SamplerError:
        retried = f" (after {self.max_retries} retries)" if _retryable(exc.status_code) else ""
        return SamplerError(
            f"vLLM refused adapter {target.adapter_id} from {target.adapter_dir}{retried}: {exc.status_code} "
            f"{_server_message(exc)} (the server at {self.base_url} must read that path, and start with "
            f"--max-lora-rank at least the adapter's rank)"
        )

    def _unreachable(self, exc: openai.APIConnectionError, what: str) -> SamplerError:
        if isinstance(exc, openai.APITimeoutError):
            return SamplerError(
                f"vLLM server at {self.base_url} did not answer {what} within {self.timeout_s:g} s, "
                f"{self.max_retries} retries included (SYNTHAUG_VLLM_REQUEST_TIMEOUT_S)"
            )
        cause = exc.__cause__ or exc
        return SamplerError(
            f"vLLM server at {self.base_url} is unreachable after {self.max_retries} retries ({what}): {cause}"
        )


class _AdapterUnknown(Exception):
    """The server answered that the requested model (our adapter) does not exist."""


def completion_arguments(params: SamplingParams, seed: int, add_special_tokens: bool) -> dict[str, Any]:
    """The completions-request fields for one sample (vLLM's own ones in extra_body)."""
    return {
        "n": 1,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": seed,
        "extra_body": {
            # Sent even when off: vLLM fills a missing field from the model's generation_config.json.
            "top_k": params.top_k,  # 0 is off in vLLM too
            "min_p": params.min_p,
            "repetition_penalty": params.repetition_penalty,
            # The rendered prompt already carries what the chat template writes: tokenize it as
            # encode_prompt does, so the server's prompt tokens are the trained ones.
            "add_special_tokens": add_special_tokens,
        },
    }


def completion_of(response: Any, base_url: str) -> Completion:
    """A Completion from a completions response of one choice."""
    choice = response.choices[0]
    try:
        finish = FinishReason(choice.finish_reason)
    except ValueError:
        raise SamplerError(
            f"vLLM server at {base_url} ended a sample with finish_reason {choice.finish_reason!r} "
            f"(expected stop or length)"
        ) from None
    return Completion(text=choice.text.strip(), finish_reason=finish, tokens=response.usage.completion_tokens)


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own words: vLLM's {"error": {"message": ...}} (the SDK unwraps "error"), else the body."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail")
        if message:
            return str(message)
    text = exc.response.text if exc.response is not None else ""
    return text.strip()[:500] or exc.message
