"""CSV tables: a header line naming the columns, one transcript per row."""

import csv
import io

from app.domain.ingestion.reader import Parsed, ReadOptions, Upload, decode_utf8
from app.domain.ingestion.tables import Row, table_records
from app.domain.validation_report import ValidationReport


class CsvReader:
    name = "csv"
    suffixes = (".csv",)

    def sniff(self, head: bytes) -> bool:
        # A header line is not recognisable as such; CSV is claimed by its name only.
        return False

    def read(self, upload: Upload, options: ReadOptions, report: ValidationReport) -> Parsed | None:
        text = decode_utf8(upload.read_bytes(), report)
        if text is None:
            return None
        rows, header = _read_rows(text, report)
        return None if rows is None else table_records(rows, header, options.mapping, report)


def _read_rows(text: str, report: ValidationReport) -> tuple[list[Row] | None, list[str]]:
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
