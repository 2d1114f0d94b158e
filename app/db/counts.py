"""Service-wide counts behind /metrics, across tenants: jobs by status, samples drawn, training speed."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import CorpusReport, FinetuneJob, Generation

JOB_KINDS = {"finetune": FinetuneJob, "generation": Generation, "report": CorpusReport}


def jobs_by_status(session: Session) -> dict[tuple[str, str], int]:
    """(kind, status) -> rows, for fine-tune jobs, generations and corpus reports."""
    counts: dict[tuple[str, str], int] = {}
    for kind, model in JOB_KINDS.items():
        for status, count in session.execute(select(model.status, func.count()).group_by(model.status)):
            counts[(kind, status)] = count
    return counts


def samples_by_status(session: Session) -> dict[str, int]:
    """Accepted and rejected sample rows.

    Summed from each generation's ``done`` and ``candidates``, which the transaction that stores a
    chunk of samples recomputes from those rows: the same numbers as counting the samples table,
    without scanning the largest table on every scrape.
    """
    accepted, drawn = session.execute(
        select(func.coalesce(func.sum(Generation.done), 0), func.coalesce(func.sum(Generation.candidates), 0))
    ).one()
    return {"accepted": int(accepted), "rejected": int(drawn) - int(accepted)}


def running_tokens_per_second(session: Session) -> dict[str, float]:
    """job id -> the latest training throughput a running fine-tune job reported."""
    rows = session.execute(select(FinetuneJob.id, FinetuneJob.metrics).where(FinetuneJob.status == "running"))
    speeds: dict[str, float] = {}
    for job_id, metrics in rows:
        value = (metrics or {}).get("tokens_per_second")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            speeds[job_id] = float(value)
    return speeds
