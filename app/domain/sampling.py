"""Typed sampling parameters and post-filter settings, stored on a generation as validated JSON.

Every sampler (hf, vllm) converts from these; nothing else defines sampling defaults.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator


# Tokens kept for the prompt when a batch is sized before its prompts are known (the study's
# prompts are under 100 tokens).
PROMPT_ALLOWANCE = 256


class SamplerName(StrEnum):
    """Sampling backends; a deployment picks its default in settings, a request may name one."""

    HF = "hf"
    VLLM = "vllm"
    OPENAI = "openai"  # OpenAI fine-tuned models only (chosen by the adapter's kind, never as a default)


class FinishReason(StrEnum):
    """How a sample ended: on its own (end token or a stop string) or cut at max_tokens."""

    STOP = "stop"
    LENGTH = "length"


class SamplingParams(BaseModel):
    """How to draw each sample. top_k 0 and min_p 0 turn those filters off; repetition_penalty 1 is none."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, gt=0.0, le=5.0, description="Softmax temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(50, ge=0, le=10_000, description="Keep the k most likely tokens; 0 disables top-k.")
    min_p: float = Field(0.0, ge=0.0, lt=1.0, description="Drop tokens below min_p x the top probability.")
    repetition_penalty: float = Field(
        1.0, ge=1.0, le=5.0, description="Penalise tokens already in the prompt or output (1 = off)."
    )
    max_tokens: int = Field(256, ge=1, le=8192, description="Longest sample in tokens; longer ones are cut.")
    stop: list[str] = Field(default_factory=list, max_length=4, description="Strings that end a sample.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Sample i of a label depends only on (seed, label, i).")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: list[str]) -> list[str]:
        for s in stop:
            if not s or len(s) > 64:
                raise ValueError("each stop string must have 1 to 64 characters")
        return stop


class FilterSettings(BaseModel):
    """Post-filters applied to every sample; rejected samples are replaced within the budget."""

    model_config = ConfigDict(extra="forbid")

    keep_truncated: bool = Field(False, description="Keep samples cut at max_tokens (default: reject them).")
    min_words: int = Field(10, ge=0, le=10_000, description="Reject samples with fewer words.")
    max_words: int | None = Field(None, ge=1, le=100_000, description="Reject samples with more words.")
    dedupe: bool = Field(True, description="Reject exact and near duplicates of the corpus's accepted samples.")
    near_duplicate_jaccard: float = Field(
        0.7, gt=0.0, le=1.0, description="Word-trigram Jaccard similarity at which two samples are near duplicates."
    )
    degenerate: bool = Field(
        True,
        description="Reject a run of one word or phrase repeated more times than anywhere in the real "
        "train transcripts of the label.",
    )
    label_consistency: bool = Field(
        True,
        description="Reject a sample that a classifier trained on the real train split (TF-IDF + logistic "
        "regression) reads as another label.",
    )
    memorization_ngram: int | None = Field(
        8, ge=3, le=100,
        description="Reject a sample sharing a run of this many words with a real training transcript (null = off).",
    )
    candidate_budget: float = Field(
        3.0, ge=1.0, le=20.0, description="Draw at most this many times n candidates per label."
    )


def sample_seed(seed: int, label: str, index: int) -> int:
    """The seed of one sample: a function of the request seed, the label and the sample index only."""
    digest = hashlib.sha256(f"{seed}:{label}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def kv_bytes_per_token(config: Mapping[str, Any], dtype_bytes: int) -> int:
    """KV cache bytes one token takes in a decoder, from its HF config: keys and values of every layer."""
    heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * heads * head_dim * dtype_bytes
