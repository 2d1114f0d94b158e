"""The sampler interface: one prompt, n samples, delivered batch by batch in index order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

Batch = list[tuple[int, str]]


@dataclass(frozen=True)
class SamplingParams:
    """How many samples and how to draw them; top_k 0 or None turns top-k off, temperature 0 is greedy."""

    n: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = 50
    max_tokens: int = 256
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError("top_k must be 0 or None (off) or positive")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass(frozen=True)
class SampleTarget:
    """The fine-tuned adapter to sample from, its registry base model and trained quantization."""

    adapter_dir: Path
    base_model: str
    quantization: str


class Sampler(Protocol):
    """Draws samples from a fine-tuned model for one prompt."""

    def sample(
        self,
        target: SampleTarget,
        prompt_messages: list[dict[str, str]],
        params: SamplingParams,
        *,
        start_index: int = 0,
        on_batch: Callable[[Batch], None],
    ) -> None:
        """Call on_batch with (index, text) pairs for indices start_index..n-1, batch by batch in order.

        Sample i is the same text whatever start_index was, so a crashed run resumes where it stopped.
        """
        ...
