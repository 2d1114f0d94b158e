from __future__ import annotations

from datetime import datetime
from typing import Any

from app.schemas.common import ORMModel


class DatasetPublic(ORMModel):
    id: str
    name: str
    filename: str
    column_mapping: dict[str, Any]
    split_seed: int
    record_count: int
    report: dict[str, Any]
    created_at: datetime


class RecordPublic(ORMModel):
    id: int
    row: int
    participant_id: str
    text: str
    label: str
    split: str
