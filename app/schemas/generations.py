from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from app.domain.sampling import FilterSettings, SamplerName, SamplingParams
from app.schemas.common import ORMModel


class GenerateRequest(SamplingParams):
    """Sampling parameters at the top level, plus what to sample from, how many, and where to put them."""

    adapter_id: str
    label: str | None = Field(None, description="The one label to condition on, e.g. 'control' or 'impaired'.")
    n: int | None = Field(None, ge=1, le=100_000, description="Number of transcripts for `label`.")
    counts: dict[str, int] | None = Field(
        None, description="Several labels at once, e.g. {\"control\": 50, \"impaired\": 50} (instead of label and n)."
    )
    sampler: SamplerName | None = Field(None, description="hf or vllm for PEFT adapters (default: the deployment's); an OpenAI fine-tune always uses openai.")
    batch_size: int | None = Field(
        None, ge=1, le=1024, description="Samples drawn per chunk; default: chosen from the sampler's memory."
    )
    filters: FilterSettings = Field(default_factory=FilterSettings)
    corpus_id: str | None = Field(None, description="Append to this corpus; default: a new one.")

    @model_validator(mode="after")
    def _one_way_to_count(self) -> "GenerateRequest":
        if self.counts is not None:
            if self.label is not None or self.n is not None:
                raise ValueError("give either label and n, or counts, not both")
            if not self.counts or any(not isinstance(v, int) or v < 1 for v in self.counts.values()):
                raise ValueError("counts needs at least one label, each with a count of at least 1")
        elif self.label is None or self.n is None:
            raise ValueError("give label and n (or counts for several labels)")
        return self

    def label_counts(self) -> dict[str, int]:
        return dict(self.counts) if self.counts is not None else {self.label: self.n}

    def sampling_params(self) -> SamplingParams:
        return SamplingParams.model_validate(self.model_dump(include=set(SamplingParams.model_fields)))


class GenerationPublic(ORMModel):
    id: str
    adapter_id: str
    corpus_id: str
    label: str | None
    counts: dict[str, int]
    n: int
    done: int = Field(description="Accepted samples so far.")
    candidates: int = Field(description="Samples drawn so far, accepted or rejected.")
    progress: dict[str, Any] = Field(description="Per label: accepted and rejected so far.")
    rejected: dict[str, int] = Field(description="Rejected samples by reason.")
    budget_exhausted: bool = Field(description="Finished with fewer than n accepted: the candidate budget ran out.")
    usage: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenAI samples: prompt and completion tokens billed and the system fingerprints seen.",
    )
    params: dict[str, Any]
    filters: dict[str, Any]
    sampler: str
    batch_size: int | None
    chunk_size: int | None
    status: str
    cancel_requested: bool = Field(description="Cancel was asked for; a running generation stops before its next chunk.")
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
