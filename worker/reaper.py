"""The reaper: finds jobs that no worker will finish and sends them again, or fails them.

Celery beat runs it every ``SYNTHAUG_REAPER_INTERVAL_S`` on the default queue (`synthaug beat`).
A running row whose heartbeat went stale has no live worker (it died, and the broker may have lost
its message too): it goes back to queued and is sent again, or fails with a reason once it has
used ``SYNTHAUG_MAX_ATTEMPTS``. A row queued for longer than ``SYNTHAUG_REQUEUE_QUEUED_AFTER_S``
since it was last sent is sent again (a send that failed while the broker was down). A copy sent
to a live worker's queue is harmless: the claim lets one delivery run it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, func, or_, select

from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, CorpusReport, FinetuneJob, Generation
from app.db.session import enqueue_after_commit
from app.services import finetune_jobs, generations, reports
from worker.context import WorkerContext

log = logging.getLogger(__name__)

TASKS_OF_ROWS = ((finetune_jobs.task_name_of, FinetuneJob), (lambda _row: generations.TASK_NAME, Generation),
                 (lambda _row: reports.TASK_NAME, CorpusReport))


@dataclass
class Reaped:
    """What one pass did: ids sent again and ids failed."""

    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def reap(ctx: WorkerContext) -> Reaped:
    """One pass over every kind of job row."""
    settings, now, done = ctx.settings, utcnow(), Reaped()
    stale_before = now - timedelta(seconds=settings.stale_after_s)
    waited_before = now - timedelta(seconds=settings.requeue_queued_after_s)
    for task_of, model in TASKS_OF_ROWS:
        with ctx.db.transaction() as s:
            # Held by a worker (running, or owned: an openai job mirrors remote statuses) with no heartbeat.
            held = and_(model.status.not_in(TERMINAL_STATUSES), or_(model.owner.is_not(None), model.status != "queued"))
            orphaned = and_(held, or_(model.heartbeat_at.is_(None), model.heartbeat_at < stale_before))
            forgotten = and_(model.status == "queued", model.owner.is_(None),
                             func.coalesce(model.sent_at, model.created_at) < waited_before)
            rows = s.scalars(select(model).where(or_(orphaned, forgotten)).order_by(model.id)
                             .with_for_update(skip_locked=True)).all()
            for row in rows:
                if not (row.status == "queued" and row.owner is None):
                    _release(s, row, settings.stale_after_s, settings.max_attempts, done)
                    if row.status == "failed":
                        continue
                row.sent_at = now
                enqueue_after_commit(s, task_of(row), row.id)
                done.resent.append(row.id)
    if done.resent or done.failed:
        log.info("reaper: sent again %s; failed %s", done.resent or "nothing", done.failed or "nothing")
    return done


def _release(session, row, stale_after_s: float, max_attempts: int, done: Reaped) -> None:
    """A running row without a live worker: back to queued, or failed when out of attempts."""
    last = row.heartbeat_at.isoformat() if row.heartbeat_at else "never"
    lost = f"its worker {row.owner} stopped (no heartbeat for over {stale_after_s:g} s; last {last})"
    if row.attempts >= max_attempts:
        row.status, row.finished_at, row.owner = "failed", utcnow(), None
        row.error = f"gave up after {row.attempts} attempts: {lost}"
        done.failed.append(row.id)
    else:
        row.status, row.owner = "queued", None
    if isinstance(row, FinetuneJob):
        outcome = "failed" if row.status == "failed" else "sent again"
        finetune_jobs.add_event(session, row.id, "message", f"{lost}; {outcome}")
