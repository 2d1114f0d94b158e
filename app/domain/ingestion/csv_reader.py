"""CSV tables: a header line naming the columns, one transcript per row."""

import csv
import io

from app.domain.ingestion.reader import Parsed, ReadOptions, Upload
from app.domain.ingestion.tables import Row, read_table
from app.domain.validation_report import ValidationReport


class CsvReader:
    name = "csv"
    suffixes = (".csv",)

    def sniff(self, head: bytes) -> bool:
        # A header line is not recognisable as such; CSV is claimed by its name only.
        return False

    def read(self, upload: Upload, options: ReadOptions, report: ValidationReport) -> Parsed | None:
        return read_table(upload, options, report, _read_rows)


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
