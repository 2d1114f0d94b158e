"""The trainer interface: a job spec in, events out, a LoRA adapter directory as the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from app.domain.hyperparameters import Hyperparameters

Method = Literal["qlora", "lora"]
EventKind = Literal["message", "fallback", "metrics", "eval", "checkpoint"]
Example = list[dict[str, str]]


@dataclass(frozen=True)
class TrainSpec:
    """What to fine-tune, how, and where its artifacts go."""

    base_model: str
    method: Method
    hyperparameters: Hyperparameters
    seed: int
    output_dir: Path
    cache_dir: Path
    resume_from: Path | None = None
    # QLoRA on CPU: unpack the frozen nf4 base once when it takes at most this many bytes unpacked (0: never).
    unpacked_base_max_bytes: int = 0


@dataclass(frozen=True)
class TrainEvent:
    """One progress report: a message, a fallback, logged metrics, an eval or a checkpoint."""

    kind: EventKind
    message: str = ""
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    eval_loss: float | None = None
    path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """The final adapter directory (None when stopped: a stopped run saves none), the last metrics,
    the fallbacks applied, and whether it was stopped (cancelled, or the job taken over)."""

    adapter_dir: Path | None
    metrics: dict[str, Any]
    fallbacks: list[str]
    stopped: bool


class Trainer(Protocol):
    """Fine-tunes a base model on chat examples whose last message is the assistant transcript."""

    def train(
        self,
        spec: TrainSpec,
        train_examples: list[Example],
        eval_examples: list[Example],
        on_event: Callable[[TrainEvent], None],
        should_stop: Callable[[], bool],
    ) -> TrainResult: ...
