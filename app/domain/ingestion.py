"""Parse an uploaded transcript table (CSV or JSONL) into records and a validation report.

Rows are numbered by their line in the file, as a text editor or spreadsheet shows them: in a
CSV the header is line 1, so the first data row is row 2; in JSONL each object's line.
"""

import csv
import io
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Literal

from app.domain.markers import count_words

LABELS = ("control", "impaired")
SPLITS = ("train", "validation", "test")

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
class Issue:
    """One problem found in an upload; errors block the dataset, warnings don't."""

    level: Literal["error", "warning"]
    code: str
    message: str
    row: int | None = None
    column: str | None = None
    participant: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return asdict(self)


@dataclass
class ValidationReport:
    """Everything parse_upload found, plus summary statistics."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing blocks the upload."""
        return not self.errors

    def error(self, code: str, message: str, **where) -> None:
        """Record a blocking problem."""
        self.errors.append(Issue("error", code, message, **where))

    def warn(self, code: str, message: str, **where) -> None:
        """Record a non-blocking problem."""
        self.warnings.append(Issue("warning", code, message, **where))

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return {
            "ok": self.ok,
            "errors": [issue.to_dict() for issue in self.errors],
            "warnings": [issue.to_dict() for issue in self.warnings],
            "stats": self.stats,
        }


@dataclass
class Record:
    """One validated transcript."""

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
    _check_participants(records, report)
    _check_duplicates(records, report)
    report.stats["split_assigned"] = "split" not in names
    if "split" not in names:
        _assign_splits(records, split_seed, split_ratios)
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
    if participant is None:
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


def _check_participants(records: list[Record], report: ValidationReport) -> None:
    """One label and one split per participant: real test speech must never reach training."""
    by_participant: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_participant[record.participant_id].append(record)
    for participant, rows in by_participant.items():
        first = rows[0]
        other = next((r for r in rows if r.label != first.label), None)
        if other:
            report.error(
                "label_conflict",
                f"participant {participant} is labelled '{first.label}' on line {first.row} "
                f"and '{other.label}' on line {other.row}; a participant has one label",
                row=other.row, participant=participant,
            )
        other = next((r for r in rows if r.split != first.split), None)
        if other:
            report.error(
                "participant_in_two_splits",
                f"participant {participant} is in '{first.split}' on line {first.row} and in "
                f"'{other.split}' on line {other.row}; keep each participant in one split",
                row=other.row, participant=participant,
            )


def _check_duplicates(records: list[Record], report: ValidationReport) -> None:
    by_text: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_text[" ".join(re.findall(r"\w+", record.text.lower()))].append(record)
    for rows in by_text.values():
        if len(rows) > 1:
            lines = ", ".join(str(r.row) for r in rows)
            report.warn("duplicate_text", f"lines {lines} have the same text", row=rows[1].row,
                        participant=rows[1].participant_id)


def _assign_splits(records: list[Record], seed: int, ratios: tuple[float, float, float]) -> None:
    """Split by participant, stratified by label, so no participant straddles two splits."""
    rng = random.Random(seed)
    label_of = {r.participant_id: r.label for r in records}
    split_of: dict[str, str] = {}
    for label in LABELS:
        # Sorted first so the result depends on the seed, not on the file's row order.
        participants = sorted(p for p, l in label_of.items() if l == label)
        rng.shuffle(participants)
        n_validation, n_test = _held_out_counts(len(participants), ratios)
        for i, participant in enumerate(participants):
            split_of[participant] = ("validation" if i < n_validation
                                     else "test" if i < n_validation + n_test else "train")
    for record in records:
        record.split = split_of[record.participant_id]


def _held_out_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int]:
    """Validation and test sizes; with 3+ participants each gets one and train keeps one."""
    validation, test = (int(n * ratio + 0.5) for ratio in ratios[1:])
    if n >= 3:
        validation, test = max(1, validation), max(1, test)
        while validation + test > n - 1:
            if validation >= test:
                validation -= 1
            else:
                test -= 1
    return validation, test


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
        "participants": len({r.participant_id for r in records}),
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
