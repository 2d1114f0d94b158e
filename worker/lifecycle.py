"""The rules by which a task takes its row (fine-tune job, generation, report) to running and keeps it.

Celery on Redis delivers at least once: a task can arrive twice, or again while it still runs
(visibility timeout). The row decides who runs it: a claim takes a queued row, or a running one
whose heartbeat went stale (its worker died); it leaves a running row with a fresh heartbeat to
the worker that owns it. While it runs, a heartbeat thread keeps the row fresh, and notices when
the row was taken from it (the reaper re-queued it, or another worker took it over).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Iterator

from sqlalchemy import func, select, update

from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, FinetuneJob, Generation, RunState, Tenant

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.db.session import Database

log = logging.getLogger(__name__)


def is_fresh(row: RunState, stale_after_s: float) -> bool:
    """True when the row's heartbeat is recent enough that a live worker owns it."""
    return row.heartbeat_at is not None and utcnow() - row.heartbeat_at < timedelta(seconds=stale_after_s)


def claim(row: RunState | None, max_attempts: int, owner: str, stale_after_s: float) -> bool:
    """Take a queued row, or a running one whose worker died, counting the attempt; False when there
    is nothing for this delivery to run (finished, owned by a live worker, cancelled, or out of attempts)."""
    if row is None or row.status in TERMINAL_STATUSES:
        return False
    if is_active(row) and is_fresh(row, stale_after_s):
        age = (utcnow() - row.heartbeat_at).total_seconds()
        log.info("%s %s is running on %s (heartbeat %.1f s ago); this delivery leaves it",
                 type(row).__name__, row.id, row.owner, age)
        return False
    if getattr(row, "cancel_requested", False):
        row.status, row.finished_at, row.owner = "cancelled", utcnow(), None
        return False
    if row.attempts >= max_attempts:
        row.status, row.finished_at, row.owner = "failed", utcnow(), None
        row.error = f"gave up after {row.attempts} attempts (the worker stopped each time)"
        return False
    row.attempts += 1
    row.status, row.owner = "running", owner
    row.started_at = row.started_at or utcnow()
    row.heartbeat_at = utcnow()
    return True


class TenantAtCapacity(Exception):
    """The row's tenant already runs its share of jobs; this delivery should come back later."""


def check_tenant_capacity(session: "Session", row: RunState | None, cap: int) -> None:
    """Raise TenantAtCapacity when a queued row's tenant already has ``cap`` local jobs (fine-tunes
    and generations) running; 0 = no cap. The tenant's row is locked first, so two workers claiming
    two jobs of one tenant count one after the other (Postgres; SQLite writers are serial anyway)."""
    if not cap or row is None or row.status != "queued" or getattr(row, "cancel_requested", False):
        return
    session.execute(select(Tenant.id).where(Tenant.id == row.tenant_id).with_for_update())
    running = sum(
        session.scalar(select(func.count()).select_from(model).where(
            model.tenant_id == row.tenant_id, model.status == "running", model.id != row.id, *extra))
        for model, extra in ((FinetuneJob, (FinetuneJob.method != "openai",)), (Generation, ()))
    )
    if running >= cap:
        raise TenantAtCapacity(f"tenant {row.tenant_id} has {running} jobs running (cap {cap}); "
                               f"{type(row).__name__} {row.id} waits")


def is_active(row: RunState) -> bool:
    """A worker holds the row: it is running, or it has an owner (an openai job mirrors the remote
    status, so its driver holds it while it is validating_files, queued, running or paused)."""
    return row.status not in TERMINAL_STATUSES and (row.owner is not None or row.status != "queued")


def owns(row: RunState | None, owner: str) -> bool:
    """True while ``owner`` still runs the row (nobody re-queued it or took it over)."""
    return row is not None and row.status not in TERMINAL_STATUSES and row.owner == owner


class Heartbeat:
    """A thread that writes the row's heartbeat every interval while its owner runs it."""

    def __init__(self, db: "Database", model: type, row_id: str, owner: str, interval_s: float) -> None:
        self.db, self.model, self.row_id, self.owner, self.interval_s = db, model, row_id, owner, interval_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        # The thread logs with the job's context (job id, task) of the run that started it.
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                        name=f"heartbeat-{row_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.db.transaction() as s:
                    result = s.execute(
                        update(self.model)
                        .where(self.model.id == self.row_id, self.model.owner == self.owner,
                               self.model.status.not_in(TERMINAL_STATUSES))
                        .values(heartbeat_at=utcnow())
                    )
            except Exception as exc:  # a database outage: keep beating, the row is still ours
                log.warning("heartbeat of %s failed: %s: %s", self.row_id, type(exc).__name__, exc)
                continue
            if result.rowcount == 0:
                log.warning("%s %s is no longer ours (%s); stopping", self.model.__name__, self.row_id, self.owner)
                self.lost.set()
                return


@contextmanager
def heartbeat(db: "Database", model: type, row_id: str, owner: str, interval_s: float) -> Iterator[Heartbeat]:
    """Beat for the row while the block runs; ``.lost`` is set when the row is no longer ours."""
    beat = Heartbeat(db, model, row_id, owner, interval_s)
    beat.start()
    try:
        yield beat
    finally:
        beat.stop()
