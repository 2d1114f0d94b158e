from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.schemas.common import ORMModel


class CorpusPublic(ORMModel):
    id: str
    name: str
    created_at: datetime


class CorpusDetail(CorpusPublic):
    counts: dict[str, int]
    quality: dict[str, Any]


class SamplePublic(BaseModel):
    id: int
    label: str
    text: str
    generation_id: str
    index: int
    provenance: dict[str, Any]
