"""Corpora: metadata, label counts, paginated samples and streamed exports.

An export holds the accepted samples; with ``include_real=train`` it is the augmented training set:
the real train split of the corpus's data set, then the synthetic samples, one row shape for both.
Validation and test records never leave this way: they are for judging classifiers on held-out speakers.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Sequence

import orjson
from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import Corpus, Record, Sample
from app.db.pagination import Page
from app.db.session import Database
from app.domain.markers import rates
from app.domain.splits import SPLITS, find_leaks
from app.errors import InvalidInput, NotFound

EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
REAL_SPLITS_EXPORTABLE = ("train",)
SAMPLE_STATUSES = ("accepted", "rejected", "all")
EXPORT_CHUNK = 1000  # rows read per transaction of an export
# One row shape for real and synthetic rows; JSONL rows also carry the full provenance.
EXPORT_COLUMNS = (
    "id", "synthetic", "label", "text", "participant_id", "record_id", "generation_id", "index",
    "finish_reason", "adapter_id", "base_model", "sampler", "seed", "sample_seed", "params", "provenance",
)


def get(session: Session, tenant_id: str, corpus_id: str) -> Corpus:
    corpus = repo.get_owned(session, Corpus, tenant_id, corpus_id)
    if corpus is None:
        raise NotFound(f"corpus '{corpus_id}' not found")
    return corpus


def list_for(session: Session, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Corpus]:
    return repo.list_owned(session, Corpus, tenant_id, limit=limit, cursor=cursor)


def detail(session: Session, tenant_id: str, corpus_id: str) -> dict[str, Any]:
    """Metadata, accepted samples per label, rejected candidates per label and reason, and quality."""
    corpus = get(session, tenant_id, corpus_id)
    tallies = repo.corpus_tallies(session, corpus.id)
    return {
        "id": corpus.id,
        "name": corpus.name,
        "dataset_id": corpus.dataset_id,
        "created_at": corpus.created_at,
        "counts": tallies.label_counts(),
        "rejected": tallies.reject_counts(),
        "quality": _quality(tallies),
    }


def samples(
    session: Session, tenant_id: str, corpus_id: str, *, limit: int, cursor: str | None, label: str | None,
    status: str = "accepted",
) -> dict[str, Any]:
    get(session, tenant_id, corpus_id)
    if status not in SAMPLE_STATUSES:
        raise InvalidInput(f"status '{status}' is not one of: {', '.join(SAMPLE_STATUSES)}")
    page = repo.list_samples(
        session, corpus_id, limit=limit, cursor=cursor, label=label, status=None if status == "all" else status
    )
    return {"data": [sample_to_dict(s) for s in page.data], "next_cursor": page.next_cursor}


def check_export(
    session: Session, tenant_id: str, corpus_id: str, fmt: str, include_real: Sequence[str]
) -> None:
    """Refuse an unknown corpus, format or real split before the stream starts.

    ``include_real`` is every value the query gave: only one, exactly 'train', is accepted, and only for
    a data set whose held-out speakers and transcripts are not also in its train split.
    """
    corpus = get(session, tenant_id, corpus_id)
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"export format '{fmt}' is not supported; use one of: {', '.join(EXPORT_FORMATS)}")
    if not include_real:
        return
    if len(include_real) > 1 or include_real[0] not in REAL_SPLITS_EXPORTABLE:
        given = ", ".join(f"'{value}'" for value in include_real)
        raise InvalidInput(
            f"include_real={given} is refused: only the train split can be exported with synthetic samples, "
            "asked for once as include_real=train. Validation and test participants are held out to evaluate "
            "classifiers on real speakers; putting them in an augmented training set would leak them."
        )
    if corpus.dataset_id is None:
        raise InvalidInput(f"corpus '{corpus_id}' has no samples yet, so it has no real data set to add")
    train, *held_out = (repo.records_for_split(session, corpus.dataset_id, split) for split in SPLITS)
    leaks = find_leaks(train, [record for records in held_out for record in records])
    if leaks:
        raise InvalidInput(
            f"the real train split of data set '{corpus.dataset_id}' cannot be exported: {leaks[0].message}. "
            f"It was stored before uploads were checked for this ({len(leaks)} problem(s)); upload a corrected file",
            extra={"errors": [issue.to_dict() for issue in leaks]},
        )


def label_counts(session: Session, corpus_id: str) -> dict[str, int]:
    return repo.corpus_tallies(session, corpus_id).label_counts()


def _quality(tallies: repo.CorpusTallies) -> dict[str, Any]:
    """Per-label linguistic markers of the accepted synthetic texts, from the counts stored per sample."""
    return {label: rates(*sums) for label, sums in sorted(tallies.marker_sums().items())}


def sample_to_dict(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "label": sample.label,
        "text": sample.text,
        "generation_id": sample.generation_id,
        "index": sample.index,
        "status": sample.status,
        "reject_reason": sample.reject_reason,
        "finish_reason": sample.finish_reason,
        "checks": sample.checks,
        "provenance": sample.provenance,
    }


def export_chunks(
    db: Database, corpus_id: str, label: str | None, include_real: bool
) -> Iterator[list[dict[str, Any]]]:
    """Export rows, a chunk at a time: the real train records (if asked, after check_export), then the
    accepted samples.

    Each chunk is read in a short read transaction of its own, so nothing is held while the client reads
    (a slow download never blocks a writer); samples stored while the export runs may be included.
    Samples are read as plain rows (no ORM objects), of the columns an export shows.
    """
    if include_real:
        yield from export_real_chunks(db, corpus_id, label)
    for samples in _keyset_chunks(db, lambda session, after: repo.export_samples(
            session, corpus_id, label=label, after=after, limit=EXPORT_CHUNK)):
        yield [_synthetic_row(sample) for sample in samples]


def export_sample_lines(db: Database, corpus_id: str, label: str | None) -> Iterator[list[str]]:
    """Postgres only: the accepted samples as JSON lines the database writes (the rows of
    ``_synthetic_row``), a chunk at a time, each chunk read as export_chunks reads one. The encoding
    then runs in the database's process, on the other core, while this one only sends."""
    for rows in _keyset_chunks(db, lambda session, after: repo.export_sample_lines(
            session, corpus_id, label=label, after=after, limit=EXPORT_CHUNK)):
        yield [line for _, line in rows]


def export_real_chunks(db: Database, corpus_id: str, label: str | None) -> Iterator[list[dict[str, Any]]]:
    """The real train split's rows of an augmented export, a chunk at a time (after check_export)."""
    with db.transaction(write=False) as session:
        dataset_id = session.get(Corpus, corpus_id).dataset_id
    cursor: str | None = None
    while True:
        with db.transaction(write=False) as session:
            page = repo.list_records(session, dataset_id, limit=EXPORT_CHUNK, cursor=cursor, split="train",
                                     label=label)
            rows = [_real_row(record) for record in page.data]
        if rows:
            yield rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _keyset_chunks(db: Database, read: Callable[[Session, int | None], Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """``read(session, after)`` chunk after chunk, each in a read transaction of its own, until one is
    empty; ``after`` is the first field (the sample id) of the previous chunk's last row."""
    after: int | None = None
    while True:
        with db.transaction(write=False) as session:
            chunk = read(session, after)
        if not chunk:
            return
        yield chunk
        after = chunk[-1][0]


def _real_row(record: Record) -> dict[str, Any]:
    row = dict.fromkeys(EXPORT_COLUMNS)
    row.update(synthetic=False, label=record.label, text=record.text, participant_id=record.participant_id,
               record_id=record.id)
    return row


def _synthetic_row(sample: Sequence[Any]) -> dict[str, Any]:
    # A row of repo.export_samples, unpacked by position: attribute access per field cost a third of
    # an export's time.
    sample_id, label, text, generation_id, index, finish_reason, provenance_json = sample
    p = _parsed(provenance_json)
    return {
        "id": sample_id, "synthetic": True, "label": label, "text": text, "participant_id": None,
        "record_id": None, "generation_id": generation_id, "index": index,
        "finish_reason": finish_reason, "adapter_id": p.get("adapter_id"), "base_model": p.get("base_model"),
        "sampler": p.get("sampler", "hf"), "seed": p.get("seed"), "sample_seed": p.get("sample_seed"),
        "params": p.get("params", {}), "provenance": p,
    }


def _parsed(text: str) -> dict[str, Any]:
    """Stored JSON, parsed by orjson (several times faster); the standard library takes what orjson
    refuses (NaN, which SQLite's JSON text may hold)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
