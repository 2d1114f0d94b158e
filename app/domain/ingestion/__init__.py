"""Uploads to records: one reader per format (``READERS``), one set of checks for all.

A new format is one module with a class that follows ``Reader``, added to ``READERS`` in ``upload.py``.
"""

from app.domain.ingestion.chat_layout import ChatOptions
from app.domain.ingestion.reader import ArchiveLimits, Reader
from app.domain.ingestion.records import LABELS, ColumnMapping, Record
from app.domain.ingestion.upload import READERS, TABLE_FORMATS, detect_format, parse_upload
from app.domain.splits import SPLITS, find_leaks, participant_key, transcript_key
from app.domain.validation_report import Issue, ValidationReport

__all__ = [
    "LABELS", "READERS", "SPLITS", "TABLE_FORMATS", "ArchiveLimits", "ChatOptions", "ColumnMapping", "Issue",
    "Reader", "Record", "ValidationReport", "detect_format", "find_leaks", "parse_upload", "participant_key",
    "transcript_key",
]
