"""Trainer backends by fine-tuning method (a plain registry, no plugin discovery)."""

from __future__ import annotations

from worker.training.base import Trainer, TrainEvent, TrainResult, TrainSpec
from worker.training.hf import HFTrainer

TRAINERS: dict[str, type[Trainer]] = {"qlora": HFTrainer, "lora": HFTrainer}


def get_trainer(method: str) -> Trainer:
    """A trainer for a method; ValueError names the methods available."""
    try:
        return TRAINERS[method]()
    except KeyError:
        raise ValueError(f"unknown fine-tuning method '{method}' (known: {', '.join(sorted(TRAINERS))})")


__all__ = ["TRAINERS", "Trainer", "TrainEvent", "TrainResult", "TrainSpec", "get_trainer"]
