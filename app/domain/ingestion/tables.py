"""Rows of a table (CSV or JSONL) to Records: the column mapping, and the checks of each row.

Rows are numbered by their line in the file, as a text editor or spreadsheet shows them: in a CSV the
header is line 1, so the first data row is row 2; in JSONL each object's line.
"""

from collections.abc import Callable

from app.domain.ingestion.reader import Parsed, ReadOptions, Upload, decode_utf8
from app.domain.ingestion.records import (
    MAX_PARTICIPANT_CHARS,
    NUL,
    SPLIT_ALIASES,
    ColumnMapping,
    Record,
    warn_about_length,
)
from app.domain.splits import participant_key
from app.domain.validation_report import ValidationReport

ROW_NUMBERING = "line in the file (a CSV header is line 1, so its first data row is row 2)"

Row = tuple[int, dict[str, object]]


def read_table(
    upload: Upload, options: ReadOptions, report: ValidationReport,
    read_rows: Callable[[str, ValidationReport], tuple[list[Row] | None, list[str]]],
) -> Parsed | None:
    """A table format's read: decode, split into rows with ``read_rows``, map the columns to records."""
    text = decode_utf8(upload.read_bytes(), report)
    if text is None:
        return None
    rows, columns = read_rows(text, report)
    return None if rows is None else table_records(rows, columns, options.mapping, report)


def table_records(
    rows: list[Row], columns: list[str], mapping: ColumnMapping, report: ValidationReport
) -> Parsed | None:
    """Validate every row against the mapping; None when the columns themselves are wrong."""
    report.stats.update(row_numbering=ROW_NUMBERING, rows=len(rows))
    names = _resolve_columns(columns, mapping, report)
    if names is None:
        return None
    if not rows:
        report.error("no_records", "the file has a header but no data rows; add one row per transcript")
        return None
    records = [record for row in rows if (record := _to_record(row, names, mapping, report))]
    return Parsed(records, splits_given="split" in names)


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
    errors = report.error_count
    for role, value in (("participant", participant), ("text", text)):
        if value and NUL in value:
            report.error("nul_byte", f"line {line}: column '{names[role]}' holds a NUL byte (\\x00), which a "
                         "text cannot store; remove it", column=names[role], **where)
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
    if report.error_count > errors:
        return None
    record = Record(line, participant, text, label, split)
    warn_about_length(record, report, row=line, column=names["text"])
    return record
