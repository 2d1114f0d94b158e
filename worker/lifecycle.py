"""The one rule by which every task takes its row (fine-tune job, generation, report) to running."""

from __future__ import annotations

from app.db.base import utcnow
from app.db.models import TERMINAL_STATUSES, RunState


def claim(row: RunState | None, max_attempts: int) -> bool:
    """Move a queued/running row to running, counting the attempt; False when there is nothing to run."""
    if row is None or row.status in TERMINAL_STATUSES:
        return False
    if row.attempts >= max_attempts:
        row.status, row.finished_at = "failed", utcnow()
        row.error = f"gave up after {row.attempts} attempts (the worker stopped each time)"
        return False
    row.attempts += 1
    row.status = "running"
    row.started_at = row.started_at or utcnow()
    row.heartbeat_at = utcnow()
    return True
