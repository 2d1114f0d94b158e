"""Datasets: validate an upload completely, then store it in one transaction or not at all."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import Dataset, Record
from app.db.pagination import Page
from app.domain.ingestion import TABLE_FORMATS, ArchiveLimits, ChatOptions, ColumnMapping, parse_upload
from app.errors import DatasetInvalid, InvalidInput, NotFound, UploadTooLarge

# The widths of datasets.filename and datasets.name.
MAX_FILENAME_CHARS = 300
MAX_NAME_CHARS = 200
SPOOL_CHUNK_BYTES = 1024 * 1024


def create(
    session: Session,
    tenant_id: str,
    *,
    filename: str,
    stream: BinaryIO,
    mapping: ColumnMapping,
    name: str | None,
    split_seed: int,
    max_bytes: int,
    chat: ChatOptions | None = None,
    archive: ArchiveLimits | None = None,
    count_tokens: Callable[[str], int] | None = None,
    max_report_issues: int | None = None,
) -> Dataset:
    """Parse and validate; any error raises with the full report and nothing is written."""
    if len(filename) > MAX_FILENAME_CHARS:
        raise InvalidInput(f"the file name has {len(filename)} characters, over {MAX_FILENAME_CHARS}; rename the file")
    chat = chat or ChatOptions()
    with _spooled(stream, max_bytes) as path:
        records, report = parse_upload(
            path, filename, mapping, max_bytes=max_bytes, split_seed=split_seed, count_tokens=count_tokens,
            chat=chat, archive=archive, max_listed=max_report_issues,
        )
    fmt = report.stats.get("format")
    if count_tokens is None:
        report.warn(
            "token_stats_unavailable",
            "token-length stats skipped: the base model's tokenizer is not prepared on this server yet "
            "(`synthaug models prepare`, or run any fine-tune once)",
        )
    if not report.ok:
        body = {"report": report.to_dict()}
        detail = f"the upload has {report.error_count} error(s); first: {report.errors[0].message}"
        if report.error_codes["file_too_large"]:
            raise UploadTooLarge(detail, extra=body)
        raise DatasetInvalid(detail, extra=body)
    dataset = Dataset(
        tenant_id=tenant_id,
        name=name or filename[:MAX_NAME_CHARS],
        filename=filename,
        column_mapping=mapping_to_dict(mapping) if fmt in TABLE_FORMATS else {"chat": chat.to_dict()},
        split_seed=split_seed,
        report=report.to_dict(),
        record_count=len(records),
    )
    session.add(dataset)
    session.flush()
    repo.add_records(
        session,
        (
            {
                "dataset_id": dataset.id,
                "row": r.row,
                "participant_id": r.participant_id,
                "text": r.text,
                "label": r.label,
                "split": r.split,
            }
            for r in records
        ),
    )
    return dataset


@contextmanager
def _spooled(stream: BinaryIO, max_bytes: int) -> Iterator[Path]:
    """The upload copied to a temporary file in chunks, at most one byte over the limit (enough to
    refuse it); the file is removed however parsing ends."""
    with tempfile.TemporaryDirectory(prefix="synthaug-upload-") as folder:
        path = Path(folder) / "upload"
        with path.open("wb") as out:
            left = max_bytes + 1
            while left and (chunk := stream.read(min(SPOOL_CHUNK_BYTES, left))):
                out.write(chunk)
                left -= len(chunk)
        yield path


def get(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = repo.get_owned(session, Dataset, tenant_id, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset '{dataset_id}' not found")
    return dataset


def list_for(session: Session, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Dataset]:
    return repo.list_owned(session, Dataset, tenant_id, limit=limit, cursor=cursor)


def records(
    session: Session, tenant_id: str, dataset_id: str, *, limit: int, cursor: str | None,
    split: str | None, label: str | None,
) -> Page[Record]:
    """A page of a dataset's records (404 for another tenant's dataset)."""
    get(session, tenant_id, dataset_id)
    return repo.list_records(session, dataset_id, limit=limit, cursor=cursor, split=split, label=label)


def mapping_to_dict(mapping: ColumnMapping) -> dict:
    return {
        "participant": mapping.participant,
        "text": mapping.text,
        "label": mapping.label,
        "split": mapping.split,
        "label_values": dict(mapping.label_values),
    }
