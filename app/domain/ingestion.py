"""Parse an uploaded transcript table (CSV or JSONL) into records and a validation report.

Rows are numbered by their line in the file, as a text editor or spreadsheet shows them: in a
CSV the header is line 1, so the first data row is row 2; in JSONL each object's line.

The rules that keep held-out speech out of training (one split per participant, however its id is
written; no transcript in two splits) live in ``app.domain.splits``.
"""

import csv
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

from app.domain.markers import count_words
from app.domain.splits import (
    SPLITS,
    assign_splits,
    check_participants,
    check_transcripts,
    find_leaks,
    participant_key,
    transcript_key,
)
from app.domain.validation_report import Issue, ValidationReport

__all__ = [
    "LABELS", "SPLITS", "ColumnMapping", "Issue", "Record", "ValidationReport", "find_leaks", "parse_upload",
    "participant_key", "transcript_key",
]

LABELS = ("control", "impaired")

SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}
MAX_PARTICIPANT_CHARS = 200  # records.participant_id is VARCHAR(200)
SHORT_TEXT_WORDS = 10
LONG_TEXT_WORDS = 1500
IMBALANCE_RATIO = 0.67
ROW_NUMBERING = "line in the file (a CSV header is line 1, so its first data row is row 2)"

_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_UTF8_BOM = b"\xef\xbb\xbf"

Row = tuple[int, dict[str, object]]


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns hold what, and how raw label values map onto canonical labels."""

    participant: str = "id"
    text: str = "text"
    label: str = "label"
    split: str = "split"
    label_values: Mapping[str, str] = field(
        default_factory=lambda: {"0": "control", "1": "impaired"}
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.label_values.values()) - set(LABELS))
        if unknown:
            raise ValueError(f"label_values map onto unknown labels {unknown}; use {LABELS}")

    def canonical_label(self, raw: str) -> str | None:
        """The canonical label for a raw value (stripped, case-insensitive), or None."""
        key = raw.strip().lower()
        for value, label in self.label_values.items():
            if value.strip().lower() == key:
                return label
        # Files that already use the canonical names need no mapping.
        return key if key in LABELS else None

    def accepted_labels(self) -> list[str]:
        """Every raw label value this mapping accepts."""
        return list(dict.fromkeys([*self.label_values, *LABELS]))


@dataclass
class Record:
    """One validated transcript; participant_id is kept as written (see participant_key)."""

    row: int
    participant_id: str
    text: str
    label: str
    split: str | None


def parse_upload(
    data: bytes,
    filename: str,
    mapping: ColumnMapping,
    *,
    max_bytes: int,
    split_seed: int = 0,
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    count_tokens: Callable[[str], int] | None = None,
) -> tuple[list[Record], ValidationReport]:
    """Parse and validate an upload; the records are usable only when report.ok is true."""
    if len(split_ratios) != 3 or min(split_ratios) < 0 or not math.isclose(sum(split_ratios), 1):
        raise ValueError(f"split_ratios must be three non-negative numbers summing to 1: {split_ratios}")
    report = ValidationReport()
    rows, columns = _read(data, filename, max_bytes, report)
    if rows is None:
        return [], report
    report.stats.update(row_numbering=ROW_NUMBERING, rows=len(rows))
    names = _resolve_columns(columns, mapping, report)
    if names is None:
        return [], report
    if not rows:
        report.error("no_records", "the file has a header but no data rows; add one row per transcript")
        return [], report

    records = [record for row in rows if (record := _to_record(row, names, mapping, report))]
    check_participants(records, report)
    report.stats["split_assigned"] = "split" not in names
    if "split" not in names:
        assign_splits(records, split_seed, split_ratios)
    check_transcripts(records, report)
    _check_labels(records, report)
    report.stats.update(_statistics(records, count_tokens))
    return records, report


def _read(
    data: bytes, filename: str, max_bytes: int, report: ValidationReport
) -> tuple[list[Row] | None, list[str]]:
    """Size, format and encoding checks, then the raw rows and column names (None on failure)."""
    if len(data) > max_bytes:
        report.error("file_too_large", f"the file is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
        return None, []
    fmt = _FORMATS.get(PurePath(filename).suffix.lower())
    if fmt is None:
        report.error(
            "unsupported_format",
            f"cannot read '{filename}': upload a .csv, .jsonl or .ndjson file",
        )
        return None, []
    report.stats["format"] = fmt
    body = data[len(_UTF8_BOM):] if data.startswith(_UTF8_BOM) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + len(data) - len(body)
        line = data[:offset].count(b"\n") + 1
        report.error(
            "undecodable",
            f"line {line}: byte 0x{data[offset]:02x} at offset {offset} is not valid UTF-8; "
            "save the file as UTF-8 and upload it again",
            row=line,
        )
        return None, []
    return _read_csv(text, report) if fmt == "csv" else _read_jsonl(text, report)


def _read_csv(text: str, report: ValidationReport) -> tuple[list[Row] | None, list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[Row] = []
    header: list[str] = []
    try:
        header = [name.strip() for name in next(reader, [])]
        if not any(header):
            report.error("no_records", "the file is empty; the first line must name the columns")
            return None, []
        while True:
            line = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                return rows, header
            if any(value.strip() for value in fields):
                rows.append((line, dict(zip(header, fields))))
    except csv.Error as exc:
        line = reader.line_num
        report.error("invalid_csv", f"line {line}: the CSV cannot be read ({exc})", row=line)
        return None, header


def _read_jsonl(text: str, report: ValidationReport) -> tuple[list[Row] | None, list[str]]:
    rows: list[Row] = []
    columns: dict[str, None] = {}
    # split("\n") rather than splitlines(): JSON strings may hold U+2028 and friends.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            report.error("invalid_json", f"line {line}: not valid JSON ({exc.msg} at column {exc.colno})",
                         row=line)
            continue
        if not isinstance(obj, dict):
            report.error("invalid_json", f"line {line}: expected a JSON object, found {type(obj).__name__}",
                         row=line)
            continue
        columns.update(dict.fromkeys(obj))
        rows.append((line, obj))
    if not rows:
        if not report.errors:
            report.error("no_records", "the file has no JSON objects; write one object per line")
        return None, []
    return rows, list(columns)


def _resolve_columns(
    columns: list[str], mapping: ColumnMapping, report: ValidationReport
) -> dict[str, str] | None:
    """Map each role onto the file's column name, matching case-insensitively."""
    found = {name.strip().lower(): name for name in columns}
    names, missing = {}, []
    for role in ("participant", "text", "label", "split"):
        wanted = getattr(mapping, role)
        if wanted.strip().lower() in found:
            names[role] = found[wanted.strip().lower()]
        elif role != "split":
            missing.append(wanted)
    listed = ", ".join(repr(name) for name in columns) or "none"
    for wanted in missing:
        report.error("missing_column", f"column '{wanted}' is missing; the file has columns {listed}",
                     column=wanted)
    return None if missing else names


def _cell(row: dict[str, object], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _to_record(
    row: Row, names: dict[str, str], mapping: ColumnMapping, report: ValidationReport
) -> Record | None:
    """Validate one row; None when it has an error."""
    line, values = row
    participant = _cell(values, names["participant"]) or None
    text, raw_label = _cell(values, names["text"]), _cell(values, names["label"])
    who = f" (participant {participant})" if participant else ""
    where = {"row": line, "participant": participant}
    errors = len(report.errors)
    if participant is None or not participant_key(participant):  # blank but for invisible characters
        report.error("missing_participant", f"line {line}: column '{names['participant']}' is empty",
                     column=names["participant"], **where)
    elif len(participant) > MAX_PARTICIPANT_CHARS:
        report.error("participant_too_long",
                     f"line {line}: the participant id has {len(participant)} characters, over "
                     f"{MAX_PARTICIPANT_CHARS}", column=names["participant"], **where)
    if not text:
        report.error("empty_text", f"line {line}: column '{names['text']}' is empty{who}",
                     column=names["text"], **where)
    label = mapping.canonical_label(raw_label)
    if label is None:
        accepted = ", ".join(repr(v) for v in mapping.accepted_labels())
        report.error("unknown_label", f"line {line}: label {raw_label!r} is not one of {accepted}{who}",
                     column=names["label"], **where)
    split = None
    if "split" in names:
        raw_split = _cell(values, names["split"])
        split = SPLIT_ALIASES.get(raw_split.lower())
        if split is None:
            report.error(
                "unknown_split",
                f"line {line}: split {raw_split!r} is not one of 'train', 'validation' ('val', 'dev'), "
                f"'test'{who}; or leave the column out to have splits assigned",
                column=names["split"], **where,
            )
    if len(report.errors) > errors:
        return None
    words = count_words(text)
    if words < SHORT_TEXT_WORDS:
        report.warn("short_text", f"line {line}: the text has only {words} words{who}",
                    column=names["text"], **where)
    elif words > LONG_TEXT_WORDS:
        report.warn("long_text", f"line {line}: the text has {words} words, over {LONG_TEXT_WORDS}{who}",
                    column=names["text"], **where)
    return Record(line, participant, text, label, split)


def _check_labels(records: list[Record], report: ValidationReport) -> None:
    if not records:
        return
    counts = {label: sum(r.label == label for r in records) for label in LABELS}
    for label in LABELS:
        if not any(r.label == label and r.split == "train" for r in records):
            report.error(
                "missing_label",
                f"no training records are labelled '{label}'; label-conditioned training "
                f"needs training records of every label ({', '.join(LABELS)})",
            )
    minority, majority = min(counts.values()), max(counts.values())
    if minority and minority / majority < IMBALANCE_RATIO:
        report.warn(
            "class_imbalance",
            "labels are imbalanced: " + ", ".join(f"{n} {label}" for label, n in counts.items()) + " records",
        )


def _summary(values: list[int], with_p95: bool = False) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    summary = {"min": ordered[0], "mean": sum(ordered) / len(ordered), "max": ordered[-1]}
    if with_p95:
        # Nearest-rank percentile: always one of the observed lengths.
        summary["p95"] = ordered[math.ceil(0.95 * len(ordered)) - 1]
    return summary


def _statistics(records: list[Record], count_tokens: Callable[[str], int] | None) -> dict:
    stats = {
        "records": len(records),
        "participants": len({participant_key(r.participant_id) for r in records}),
        "labels": {label: sum(r.label == label for r in records) for label in LABELS},
        "splits": {split: sum(r.split == split for r in records) for split in SPLITS},
        "label_splits": {
            label: {split: sum(r.label == label and r.split == split for r in records) for split in SPLITS}
            for label in LABELS
        },
        "words": _summary([count_words(r.text) for r in records]),
    }
    if count_tokens is not None:
        stats["tokens"] = _summary([count_tokens(r.text) for r in records], with_p95=True)
    return stats
