from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.schemas.common import ORMModel


class CorpusPublic(ORMModel):
    id: str
    name: str
    dataset_id: str | None = Field(description="The real data set whose train split the corpus's adapters learned.")
    created_at: datetime


class CorpusDetail(CorpusPublic):
    counts: dict[str, int] = Field(description="Accepted samples per label.")
    rejected: dict[str, dict[str, int]] = Field(description="Rejected candidates per label and reason.")
    quality: dict[str, Any]


class SamplePublic(BaseModel):
    id: int
    label: str
    text: str
    generation_id: str
    index: int
    status: str = Field(description="accepted (in the corpus) or rejected.")
    reject_reason: str | None
    finish_reason: str | None = Field(description="stop (ended on its own) or length (cut at max_tokens).")
    checks: dict[str, Any] = Field(description="The post-filters' measurements.")
    provenance: dict[str, Any]


class CorpusReportPublic(BaseModel):
    id: str
    corpus_id: str
    status: str = Field(description="queued, running, succeeded or failed.")
    error: str | None
    samples: int = Field(description="Accepted samples the stored report covers.")
    stale: bool = Field(description="True when the corpus has gained or lost samples since the report was computed.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    report: dict[str, Any] | None = Field(description="The evidence (see the README's report section); null until computed.")
