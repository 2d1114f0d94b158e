"""JSON Lines: one JSON object per line, one transcript per object."""

import json

from app.domain.ingestion.reader import Parsed, ReadOptions, Upload
from app.domain.ingestion.tables import Row, read_table
from app.domain.validation_report import ValidationReport


class JsonlReader:
    name = "jsonl"
    suffixes = (".jsonl", ".ndjson")

    def sniff(self, head: bytes) -> bool:
        # Many JSON files start with "{" too; JSONL is claimed by its name only.
        return False

    def read(self, upload: Upload, options: ReadOptions, report: ValidationReport) -> Parsed | None:
        return read_table(upload, options, report, _read_rows)


def _read_rows(text: str, report: ValidationReport) -> tuple[list[Row] | None, list[str]]:
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
        if not report.error_count:
            report.error("no_records", "the file has no JSON objects; write one object per line")
        return None, []
    return rows, list(columns)
