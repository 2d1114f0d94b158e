"""Sampling from an OpenAI fine-tuned model through the chat completions API.

The request's messages (the prompt set's system prompt and user instruction, as in training) go as
they are: OpenAI applies its own chat format, the one it trained the fine-tune with.
"""

from __future__ import annotations

from typing import Any, Sequence

import openai

from app.domain.sampling import FinishReason, SamplingParams
from app.errors import InvalidInput
from app.services.openai_client import openai_client
from app.settings import Settings
from worker.sampling.base import Completion, SampleRequest, SamplerError, SampleTarget, map_in_order

# Requests a chunk holds per request in flight (as for vLLM): the pool stays busy while a chunk's
# slowest requests finish, and a chunk (the unit of progress and resume) stays short.
CHUNK_PER_CONCURRENT = 2
MAX_TEMPERATURE = 2.0  # the API refuses more; SamplingParams allows up to 5 for the other samplers
# finish_reason → ours. content_filter: OpenAI cut the text short, so it is not a sample that ended
# on its own: LENGTH, which the truncation post-filter rejects unless keep_truncated.
FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "content_filter": FinishReason.LENGTH}


class OpenAISampler:
    """One chat completion per request on the target's fine-tuned model id, at most
    ``openai_concurrency`` in flight; 408/409/429/5xx and connection errors are retried by the SDK
    (``openai_max_retries`` times, honouring retry-after-ms / Retry-After).

    Sent: temperature, top_p, seed (the request's), max_completion_tokens (``max_tokens``), stop, n=1.
    top_k, min_p and repetition_penalty have no OpenAI equivalent and are not sent (frequency and
    presence penalties are not the same thing), so they do not change an OpenAI sample.
    """

    name = "openai"

    def __init__(self, settings: Settings):
        try:
            self._client = openai_client(settings)
        except InvalidInput:
            raise SamplerError("the openai sampler needs an OpenAI API key: set SYNTHAUG_OPENAI_API_KEY") from None
        self._key = settings.openai_api_key.get_secret_value()
        self.base_url = str(self._client.base_url).rstrip("/")
        self.concurrency = settings.openai_concurrency
        self.max_retries = settings.openai_max_retries
        self.timeout_s = settings.openai_timeout_s

    def chunk_size(self, target: SampleTarget, params: SamplingParams, prompt_tokens: int = 0) -> int:
        """A multiple of the concurrency; OpenAI's servers size their own batches."""
        return CHUNK_PER_CONCURRENT * self.concurrency

    def sample(
        self, target: SampleTarget, requests: Sequence[SampleRequest], params: SamplingParams
    ) -> list[Completion]:
        """One completion per request, in request order; SamplerError once retries are spent."""
        model = self._model(target)
        if params.temperature > MAX_TEMPERATURE:
            raise SamplerError(
                f"OpenAI accepts a temperature of at most {MAX_TEMPERATURE:g}, not {params.temperature:g} "
                f"(sampling from {model})"
            )
        return map_in_order(lambda r: self._complete(model, r, params), requests, self.concurrency, "openai")

    def _model(self, target: SampleTarget) -> str:
        """The fine-tuned model id to sample from; never the base model (what the study's notebook did)."""
        model = target.remote_model
        if target.kind != "openai" or not model:
            raise SamplerError(
                f"adapter {target.adapter_id} is a {target.kind} adapter without an OpenAI fine-tuned model id; "
                f"the openai sampler samples only from OpenAI fine-tunes (use hf or vllm for it)"
            )
        if not model.startswith("ft:") or model == target.base_model:
            raise SamplerError(
                f"adapter {target.adapter_id} names {model!r}, which is not an OpenAI fine-tuned model id "
                f"(ft:...); refusing to sample from a base model"
            )
        return model

    def _complete(self, model: str, request: SampleRequest, params: SamplingParams) -> Completion:
        arguments: dict[str, Any] = {
            "model": model,
            "messages": request.message_dicts(),
            "n": 1,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": request.seed,
            "max_completion_tokens": params.max_tokens,
        }
        if params.stop:
            arguments["stop"] = list(params.stop)
        try:
            response = self._client.chat.completions.create(**arguments)
        except openai.APIStatusError as exc:
            raise self._refused(model, exc) from None
        except openai.APIConnectionError as exc:
            raise self._unreachable(model, exc) from None
        return self._completion(model, response)

    def _completion(self, model: str, response: Any) -> Completion:
        choice = response.choices[0]
        finish = FINISH_REASONS.get(choice.finish_reason)
        if finish is None:
            raise SamplerError(
                f"OpenAI ended a sample from {model} with finish_reason {choice.finish_reason!r} "
                f"(expected stop, length or content_filter)"
            )
        usage = response.usage
        details: dict[str, Any] = {
            "model": response.model,
            "system_fingerprint": response.system_fingerprint,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
        }
        if choice.finish_reason == "content_filter":
            details["finish_reason"] = "content_filter"
        text = (choice.message.content or "").strip()
        return Completion(text=text, finish_reason=finish, tokens=usage.completion_tokens if usage else 0,
                          details=details)

    def _refused(self, model: str, exc: openai.APIStatusError) -> SamplerError:
        status = exc.status_code
        message = self._scrubbed(_api_message(exc))
        if status == 401:
            hint = "; check SYNTHAUG_OPENAI_API_KEY"
        elif status == 404:
            hint = "; the fine-tune may have been deleted, or belong to another organization than the key"
        else:
            hint = ""
        retried = f" after {self.max_retries} retries" if _retryable(status) else ""
        return SamplerError(f"OpenAI answered {status}{retried} to sampling from {model}: {message}{hint}")

    def _unreachable(self, model: str, exc: openai.APIConnectionError) -> SamplerError:
        if isinstance(exc, openai.APITimeoutError):
            return SamplerError(
                f"OpenAI at {self.base_url} did not answer sampling from {model} within {self.timeout_s:g} s, "
                f"{self.max_retries} retries included (SYNTHAUG_OPENAI_TIMEOUT_S)"
            )
        cause = self._scrubbed(str(exc.__cause__ or exc))
        return SamplerError(
            f"OpenAI at {self.base_url} is unreachable after {self.max_retries} retries (sampling from {model}): "
            f"{cause}"
        )

    def _scrubbed(self, text: str) -> str:
        """``text`` without the API key, should a server or proxy echo it."""
        return text.replace(self._key, "[redacted]")


def _retryable(status: int) -> bool:
    """The statuses the SDK retries (openai._base_client._should_retry)."""
    return status in (408, 409, 429) or status >= 500


def _api_message(exc: openai.APIStatusError) -> str:
    """The API's own words: its {"error": {"message": ...}} (the SDK unwraps "error"), else the body."""
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    text = exc.response.text if exc.response is not None else ""
    return text.strip()[:500] or exc.message
