from __future__ import annotations

import json

from datetime import datetime
from typing import Any

from app.domain.ingestion import ColumnMapping
from app.errors import InvalidInput
from app.schemas.common import ORMModel


def column_mapping(
    participant: str, text: str, label: str, split: str, label_values_json: str | None
) -> ColumnMapping:
    """The upload form's column names and ``label_values`` JSON as a ColumnMapping (422 if invalid)."""
    if label_values_json is None:
        return ColumnMapping(participant=participant, text=text, label=label, split=split)
    try:
        values = json.loads(label_values_json)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"form field 'label_values' is not valid JSON: {exc.msg}") from exc
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise InvalidInput("form field 'label_values' must be a JSON object of raw value -> label, "
                           'e.g. {"Control": "control", "ProbableAD": "impaired"}')
    try:
        return ColumnMapping(participant=participant, text=text, label=label, split=split,
                             label_values={str(k): v for k, v in values.items()})
    except ValueError as exc:
        raise InvalidInput(f"form field 'label_values': {exc}") from exc


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
