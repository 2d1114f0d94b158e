"""Corpus reports: requested when a generation succeeds (or on demand), computed by a worker, stored.

The report is stored as JSON in its row and, with its HTML page, as files under the artifacts
directory; requests read what is stored and never recompute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, CorpusReport
from app.db.session import enqueue_after_commit
from app.errors import Conflict, NotFound
from app.services import corpora

TASK_NAME = "report.run"
HTML_NAME = "report.html"
JSON_NAME = "report.json"


def request(session: Session, tenant_id: str, corpus_id: str) -> CorpusReport:
    """Queue a (re)computation of the corpus's report; one already queued or running is left to finish."""
    corpus = corpora.get(session, tenant_id, corpus_id)
    row = of_corpus(session, corpus.id, for_update=True)
    if row is None:
        row = CorpusReport(tenant_id=corpus.tenant_id, corpus_id=corpus.id, status="queued", samples=0)
        session.add(row)
    elif row.status in TERMINAL_STATUSES:
        row.status, row.attempts, row.error, row.owner = "queued", 0, None, None
        row.started_at = row.finished_at = row.heartbeat_at = None
        row.sent_at = utcnow()
    else:
        return row
    session.flush()
    enqueue_after_commit(session, TASK_NAME, row.id)
    return row


def get(session: Session, tenant_id: str, corpus_id: str) -> CorpusReport:
    corpora.get(session, tenant_id, corpus_id)
    row = of_corpus(session, corpus_id)
    if row is None:
        raise NotFound(f"corpus '{corpus_id}' has no report yet: it is computed when a generation into it "
                       f"succeeds, or on POST /corpora/{corpus_id}/report")
    return row


def is_stale(session: Session, row: CorpusReport) -> bool:
    """A computed report whose corpus has gained or lost accepted samples since."""
    return row.status == "succeeded" and sum(corpora.label_counts(session, row.corpus_id).values()) != row.samples


def status_of(session: Session, row: CorpusReport) -> dict[str, Any]:
    """The row as the API shows it, with whether newer samples arrived since it was computed."""
    return {
        "id": row.id, "corpus_id": row.corpus_id, "status": row.status, "error": row.error,
        "samples": row.samples, "stale": is_stale(session, row),
        "created_at": row.created_at, "started_at": row.started_at, "finished_at": row.finished_at,
        "report": row.report if row.status == "succeeded" else None,
    }


def html_of(session: Session, tenant_id: str, corpus_id: str, artifact_dir: Path) -> Path:
    """The stored page of a computed report."""
    row = get(session, tenant_id, corpus_id)
    if row.status != "succeeded":
        raise Conflict(f"the report of corpus '{corpus_id}' is {row.status}"
                       + (f": {row.error}" if row.error else "; try again when it has succeeded"))
    path = directory(artifact_dir, corpus_id) / HTML_NAME
    if not path.is_file():
        raise Conflict(f"the report page of corpus '{corpus_id}' is missing from the artifact store; "
                       f"POST /corpora/{corpus_id}/report recomputes it")
    return path


def directory(artifact_dir: Path, corpus_id: str) -> Path:
    return Path(artifact_dir) / "corpora" / corpus_id


def of_corpus(session: Session, corpus_id: str, *, for_update: bool = False) -> CorpusReport | None:
    query = select(CorpusReport).where(CorpusReport.corpus_id == corpus_id)
    return session.scalars(query.with_for_update() if for_update else query).first()


def finish(row: CorpusReport, report: dict[str, Any] | None, samples: int, error: str | None = None) -> None:
    row.status = "failed" if error else "succeeded"
    row.report, row.samples, row.error, row.finished_at, row.owner = report, samples, error, utcnow(), None
