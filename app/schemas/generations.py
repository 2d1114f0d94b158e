from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.schemas.common import ORMModel


class GenerateRequest(BaseModel):
    adapter_id: str
    label: str = Field(..., description="Label to condition on, e.g. 'control' or 'impaired'.")
    n: int = Field(..., ge=1, le=100_000, description="Number of transcripts to sample.")
    temperature: float = Field(1.0, gt=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0, le=10_000, description="0 disables top-k.")
    max_tokens: int = Field(200, ge=1, le=8192)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    batch_size: int = Field(8, ge=1, le=256)
    corpus_id: str | None = Field(None, description="Append to this corpus; default: a new one.")

    def sampling_params(self) -> dict[str, Any]:
        """The stored, JSON form of the sampling parameters (without n)."""
        return self.model_dump(include={"temperature", "top_p", "top_k", "max_tokens", "seed", "batch_size"})


class GenerationPublic(ORMModel):
    id: str
    adapter_id: str
    corpus_id: str
    label: str
    n: int
    done: int
    params: dict[str, Any]
    status: str
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
