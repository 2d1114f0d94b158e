"""Sampler backends by name (a plain registry, no plugin discovery), built from Settings."""

from __future__ import annotations

from typing import Callable

from app.domain.sampling import SamplerName
from app.settings import Settings
from worker.sampling.base import Completion, Sampler, SampleRequest, SamplerError, SampleTarget


def _hf(settings: Settings) -> Sampler:
    from worker.sampling.hf import HFSampler

    return HFSampler(settings)


def _vllm(settings: Settings) -> Sampler:
    from worker.sampling.vllm import VLLMSampler

    return VLLMSampler(settings)


def _openai(settings: Settings) -> Sampler:
    from worker.sampling.openai import OpenAISampler

    return OpenAISampler(settings)


SAMPLERS: dict[SamplerName, Callable[[Settings], Sampler]] = {
    SamplerName.HF: _hf, SamplerName.VLLM: _vllm, SamplerName.OPENAI: _openai,
}


def build_sampler(name: str, settings: Settings) -> Sampler:
    """A sampler instance; ValueError names the samplers there are."""
    try:
        factory = SAMPLERS[SamplerName(name)]
    except ValueError:
        raise ValueError(f"unknown sampler '{name}' (known: {', '.join(SamplerName)})") from None
    return factory(settings)


__all__ = ["SAMPLERS", "Completion", "SampleRequest", "SampleTarget", "Sampler", "SamplerError", "build_sampler"]
