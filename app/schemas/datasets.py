from __future__ import annotations

import json

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from app.domain.chat_transcripts import RenderOptions
from app.domain.ingestion import ChatOptions, ColumnMapping
from app.domain.ingestion.chat_layout import DEFAULT_LABEL_MAP, DEFAULT_PARTICIPANT_PATTERN
from app.errors import InvalidInput
from app.schemas.common import ORMModel


def column_mapping(
    participant: str, text: str, label: str, split: str, label_values_json: str | None
) -> ColumnMapping:
    """The upload form's column names and ``label_values`` JSON as a ColumnMapping (422 if invalid)."""
    if label_values_json is None:
        return ColumnMapping(participant=participant, text=text, label=label, split=split)
    values = _string_map(label_values_json, "label_values", "raw value -> label",
                         '{"Control": "control", "ProbableAD": "impaired"}')
    try:
        return ColumnMapping(participant=participant, text=text, label=label, split=split,
                             label_values={str(k): v for k, v in values.items()})
    except ValueError as exc:
        raise InvalidInput(f"form field 'label_values': {exc}") from exc


def chat_options(
    render: dict[str, Any], label_map_json: str | None, participant_pattern: str | None
) -> ChatOptions:
    """The upload form's CHAT fields as ChatOptions (422 naming the field if invalid)."""
    try:
        options = RenderOptions(**render)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"CHAT form fields: {problems}") from exc
    label_map = None
    if label_map_json is not None:
        label_map = _string_map(label_map_json, "label_map", "folder name -> label",
                                '{"cc": "control", "cd": "impaired"}')
    try:
        return ChatOptions(
            render=options,
            label_map=DEFAULT_LABEL_MAP if label_map is None else label_map,
            participant_pattern=participant_pattern or DEFAULT_PARTICIPANT_PATTERN,
        )
    except ValueError as exc:
        field = "label_map" if "label_map" in str(exc) else "participant_pattern"
        raise InvalidInput(f"form field '{field}': {exc}") from exc


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


def _string_map(raw: str, field: str, meaning: str, example: str) -> dict:
    """A form field holding a JSON object of strings (422 naming the field if it is not one)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"form field '{field}' is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidInput(f"form field '{field}' must be a JSON object of {meaning}, e.g. {example}")
    return value
