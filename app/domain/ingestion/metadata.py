"""Metadata files beside CHAT transcripts: one row per participant or file, with its label.

ADReSS ships ``;``-separated text (``cc_meta_data.txt``: ``ID ; age ; gender ; mmse``; the test set's
``meta_data_test.txt`` adds a 0/1 ``Label``); others ship a CSV (``adressfname,mmse,dx``). A file
without a label column labels its rows by its name's first word through label_map (``cc_...``).
"""

import csv
import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from app.domain.ingestion.chat_layout import ChatOptions
from app.domain.splits import participant_key
from app.domain.validation_report import ValidationReport

ID_COLUMNS = ("id", "participant", "participant_id", "adressfname", "file", "filename", "subject")
LABEL_COLUMNS = ("label", "dx", "diagnosis", "group", "class")


@dataclass(frozen=True)
class MetadataRow:
    """One row of a metadata file: where it is, and the label it gives (as written, and mapped)."""

    file: str
    line: int
    raw_label: str | None
    label: str | None


def is_metadata(path: str) -> bool:
    """A CSV, or a text file whose name says it holds metadata (ADReSS ``*_meta_data.txt``)."""
    name = PurePosixPath(path).name.casefold()
    return name.endswith(".csv") or (name.endswith(".txt") and "meta" in name)


def read_metadata(
    path: str, text: str, options: ChatOptions, report: ValidationReport, rows_by_id: dict[str, "MetadataRow"]
) -> None:
    """Add the file's rows to ``rows_by_id``, keyed by participant_key of their id (a participant id or a
    file's base name); an id listed twice keeps its first row."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        report.warn("empty_metadata", f"{path}: the metadata file is empty", file=path)
        return
    delimiter = ";" if ";" in lines[start] else ","
    reader = csv.reader(io.StringIO("\n".join(lines[start:])), delimiter=delimiter)
    header = [name.strip().casefold() for name in next(reader)]
    columns = {role: next((header.index(c) for c in candidates if c in header), None)
               for role, candidates in (("id", ID_COLUMNS), ("label", LABEL_COLUMNS))}
    if columns["id"] is None:
        # A warning: a zipped folder may hold other tables; a transcript left unlabelled is still an error.
        report.warn(
            "metadata_columns",
            f"{path}: line {start + 1}: not read as metadata: no id column (one of {', '.join(ID_COLUMNS)}); "
            f"the header has {', '.join(repr(h) for h in header if h) or 'no names'}",
            row=start + 1, file=path,
        )
        return
    named_label = options.mapped_label(PurePosixPath(path).stem.split("_")[0])
    for fields in reader:
        line = start + reader.line_num
        value = {role: fields[i].strip() if i is not None and i < len(fields) else None
                 for role, i in columns.items()}
        key = participant_key(PurePosixPath(value["id"] or "").stem)
        if not key:
            continue
        if key in rows_by_id:
            first = rows_by_id[key]
            report.warn("metadata_duplicate", f"{path}: line {line}: id {value['id']!r} is listed again; "
                        f"line {first.line} of {first.file} is used", row=line, file=path)
            continue
        raw = value["label"] or None
        label = options.value_label(raw) if raw else named_label
        rows_by_id[key] = MetadataRow(path, line, raw, label)
