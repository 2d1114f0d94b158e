"""Corpora: metadata, label counts, paginated samples and streamed exports."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import Corpus, Sample
from app.db.pagination import Page
from app.domain.markers import summarise
from app.errors import InvalidInput, NotFound

EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
_CSV_COLUMNS = ("id", "label", "text", "generation_id", "index", "adapter_id", "base_model", "seed", "params")


def get(session: Session, tenant_id: str, corpus_id: str) -> Corpus:
    corpus = repo.get_owned(session, Corpus, tenant_id, corpus_id)
    if corpus is None:
        raise NotFound(f"corpus '{corpus_id}' not found")
    return corpus


def list_for(session: Session, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Corpus]:
    return repo.list_owned(session, Corpus, tenant_id, limit=limit, cursor=cursor)


def detail(session: Session, tenant_id: str, corpus_id: str) -> dict[str, Any]:
    """Metadata, sample counts per label and the quality report."""
    corpus = get(session, tenant_id, corpus_id)
    return {
        "id": corpus.id,
        "name": corpus.name,
        "created_at": corpus.created_at,
        "counts": label_counts(session, corpus.id),
        "quality": quality(session, corpus.id),
    }


def samples(
    session: Session, tenant_id: str, corpus_id: str, *, limit: int, cursor: str | None, label: str | None
) -> dict[str, Any]:
    get(session, tenant_id, corpus_id)
    page = repo.list_samples(session, corpus_id, limit=limit, cursor=cursor, label=label)
    return {"data": [sample_to_dict(s) for s in page.data], "next_cursor": page.next_cursor}


def check_export(session: Session, tenant_id: str, corpus_id: str, fmt: str) -> None:
    """Refuse an unknown corpus or format before the stream starts."""
    get(session, tenant_id, corpus_id)
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"export format '{fmt}' is not supported; use one of: {', '.join(EXPORT_FORMATS)}")


def label_counts(session: Session, corpus_id: str) -> dict[str, int]:
    return repo.corpus_label_counts(session, corpus_id)


def quality(session: Session, corpus_id: str) -> dict[str, Any]:
    """Per-label linguistic markers of the synthetic texts."""
    return {
        label: summarise(repo.sample_texts(session, corpus_id, label))
        for label in sorted(label_counts(session, corpus_id))
    }


def sample_to_dict(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "label": sample.label,
        "text": sample.text,
        "generation_id": sample.generation_id,
        "index": sample.index,
        "provenance": sample.provenance,
    }


def export(session: Session, corpus_id: str, fmt: str, label: str | None) -> Iterator[str]:
    """The corpus in ``fmt``, produced chunk by chunk."""
    rows = repo.iter_samples(session, corpus_id, label)
    return _jsonl(rows) if fmt == "jsonl" else _csv(rows)


def _jsonl(samples: Iterator[Sample]) -> Iterator[str]:
    for sample in samples:
        yield json.dumps(sample_to_dict(sample), ensure_ascii=False) + "\n"


def _csv(samples: Iterator[Sample]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    for sample in samples:
        p = sample.provenance
        writer.writerow(
            (sample.id, sample.label, sample.text, sample.generation_id, sample.index,
             p.get("adapter_id"), p.get("base_model"), p.get("seed"), json.dumps(p.get("params", {})))
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()
