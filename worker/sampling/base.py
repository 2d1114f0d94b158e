"""The sampler interface: a chunk of sample requests in, one completion per request out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

from app.domain.sampling import FinishReason, SamplingParams
from worker.models import adapter_problem


class SamplerError(RuntimeError):
    """Sampling failed in a way the user can act on (server down, adapter refused, wrong base model)."""


def check_adapter(target: "SampleTarget") -> None:
    """SamplerError naming the adapter and the damage when its directory cannot be loaded."""
    problem = adapter_problem(target.adapter_dir)
    if problem is not None:
        raise SamplerError(f"adapter {target.adapter_id} cannot be loaded: {problem}; fine-tune it again")


@dataclass(frozen=True)
class SampleTarget:
    """The fine-tuned adapter to sample from: its id, directory, registry base model and trained
    quantization; for an OpenAI fine-tune (kind ``openai``) the fine-tuned model id instead of a directory."""

    adapter_id: str
    adapter_dir: Path | None
    base_model: str
    quantization: str
    kind: Literal["peft", "openai"] = "peft"
    remote_model: str | None = None


@dataclass(frozen=True)
class SampleRequest:
    """One sample to draw: the chat messages (rendered by the one prompt renderer) and its own seed."""

    messages: tuple[tuple[str, str], ...]
    seed: int

    @classmethod
    def of(cls, messages: Sequence[dict[str, str]], seed: int) -> "SampleRequest":
        return cls(tuple((m["role"], m["content"]) for m in messages), seed)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class Completion:
    """A drawn sample: its text (stripped, without the end token), how it ended and its token count."""

    text: str
    finish_reason: FinishReason
    tokens: int
    # What a remote sampler reports about this sample (OpenAI: system_fingerprint, prompt and
    # completion tokens); stored in the sample's provenance.
    details: Mapping[str, Any] = field(default_factory=dict)


class Sampler(Protocol):
    """Draws samples from a fine-tuned adapter. The text of a request depends only on its messages,
    seed and the parameters (up to floating-point differences between batch shapes)."""

    name: str

    def chunk_size(self, target: SampleTarget, params: SamplingParams, prompt_tokens: int) -> int:
        """How many requests one ``sample`` call should carry for this target, from memory and concurrency."""
        ...

    def sample(
        self, target: SampleTarget, requests: Sequence[SampleRequest], params: SamplingParams
    ) -> list[Completion]:
        """One completion per request, in request order."""
        ...


def map_in_order(call: Callable[[T], R], items: Sequence[T], concurrency: int, name: str) -> list[R]:
    """``call`` on every item with at most ``concurrency`` in flight, results in item order. The first
    failure is raised at once: items not yet sent are dropped, those in flight end on their own timeouts."""
    if not items:
        return []
    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix=name)
    try:
        results = [future.result() for future in [pool.submit(call, item) for item in items]]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results
