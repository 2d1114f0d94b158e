"""Parse an upload in any format (the READERS registry) into records and a validation report.

The format comes from the file name's suffix, else from its first bytes (a zip, a CHAT header). The
rules that keep held-out speech out of training (one split per participant, however its id is written;
no transcript in two splits) live in ``app.domain.splits`` and apply to every format alike.
"""

import math
from collections.abc import Callable
from pathlib import Path, PurePath

from app.domain.ingestion.archive_reader import ArchiveReader
from app.domain.ingestion.chat_layout import ChatOptions
from app.domain.ingestion.chat_reader import ChatReader
from app.domain.ingestion.csv_reader import CsvReader
from app.domain.ingestion.jsonl_reader import JsonlReader
from app.domain.ingestion.reader import ArchiveLimits, Reader, ReadOptions, Upload
from app.domain.ingestion.records import ColumnMapping, Record, check_labels, statistics
from app.domain.splits import assign_splits, check_participants, check_transcripts
from app.domain.validation_report import ValidationReport

READERS: dict[str, Reader] = {
    reader.name: reader for reader in (CsvReader(), JsonlReader(), ChatReader(), ArchiveReader())
}
TABLE_FORMATS = frozenset({"csv", "jsonl"})
SNIFFED_BYTES = 512


def detect_format(filename: str, head: bytes) -> str | None:
    """The READERS key for a file: by its suffix, else by its first bytes; None if no reader claims it."""
    suffix = PurePath(filename).suffix.lower()
    by_suffix = next((name for name, reader in READERS.items() if suffix in reader.suffixes), None)
    return by_suffix or next((name for name, reader in READERS.items() if reader.sniff(head)), None)


def parse_upload(
    data: bytes | Path,
    filename: str,
    mapping: ColumnMapping,
    *,
    max_bytes: int,
    split_seed: int = 0,
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    count_tokens: Callable[[str], int] | None = None,
    chat: ChatOptions | None = None,
    archive: ArchiveLimits | None = None,
    max_listed: int | None = None,
) -> tuple[list[Record], ValidationReport]:
    """Parse and validate an upload (its bytes, or the file it was spooled to); the records are usable
    only when report.ok is true. ``mapping`` reads tables; ``chat`` and ``archive`` CHAT files and zips;
    ``max_listed`` caps the errors and warnings the report lists (all are counted)."""
    if len(split_ratios) != 3 or min(split_ratios) < 0 or not math.isclose(sum(split_ratios), 1):
        raise ValueError(f"split_ratios must be three non-negative numbers summing to 1: {split_ratios}")
    report = ValidationReport(max_listed=max_listed)
    upload = Upload(filename, data=data) if isinstance(data, bytes) else Upload(filename, path=data)
    fmt = detect_format(filename, upload.head(SNIFFED_BYTES))
    if fmt is not None:
        report.stats["format"] = fmt
    if upload.size > max_bytes:
        # The upload is spooled only one byte past the limit: its full size is not known.
        report.error("file_too_large", f"the file is over the limit of {max_bytes:,} bytes "
                     "(SYNTHAUG_MAX_UPLOAD_BYTES)")
        return [], report
    if fmt is None:
        report.error(
            "unsupported_format",
            f"cannot read '{filename}': upload a .csv, .jsonl or .ndjson table, a CHAT transcript (.cha) "
            "or a .zip of CHAT transcripts",
        )
        return [], report
    options = ReadOptions(mapping, chat or ChatOptions(), archive or ArchiveLimits())
    parsed = READERS[fmt].read(upload, options, report)
    if parsed is None:
        return [], report
    records = parsed.records
    check_participants(records, report)
    report.stats["split_assigned"] = not parsed.splits_given
    if not parsed.splits_given:
        assign_splits(records, split_seed, split_ratios)
    check_transcripts(records, report)
    check_labels(records, report)
    report.stats.update(statistics(records, count_tokens))
    return records, report
