"""Sampler backends by name (a plain registry, no plugin discovery)."""

from __future__ import annotations

from worker.sampling.base import Batch, Sampler, SampleTarget, SamplingParams
from worker.sampling.hf import HFSampler

SAMPLERS: dict[str, type] = {"hf": HFSampler}

__all__ = ["SAMPLERS", "Batch", "HFSampler", "Sampler", "SampleTarget", "SamplingParams"]
