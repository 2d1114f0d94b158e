"""Keep-last-N for a fine-tune's checkpoints: older directories are deleted and their rows removed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import delete, select

from app.db.models import Adapter, Checkpoint
from app.db.session import Database

log = logging.getLogger(__name__)


def prune_checkpoints(db: Database, job_id: str, keep: int, job_dir: Path) -> list[int]:
    """Remove all but the newest ``keep`` checkpoints of a job; returns the steps removed.

    The newest checkpoint is the one a restarted job resumes from, so it is always kept. A checkpoint
    an adapter is registered from (an OpenAI job's checkpoint models) is never removed. Rows go first,
    directories after the commit: a directory that outlives its row is only disk, while a row must
    never name a directory that is gone. Only directories inside the job's own ``job_dir`` are deleted.
    """
    keep = max(1, keep)
    with db.transaction() as s:
        backed = select(Adapter.checkpoint_id).where(Adapter.checkpoint_id.is_not(None))
        rows = s.execute(select(Checkpoint.id, Checkpoint.step, Checkpoint.path)
                         .where(Checkpoint.job_id == job_id, Checkpoint.id.not_in(backed))
                         .order_by(Checkpoint.step.desc())).all()
        old = rows[keep:]
        if not old:
            return []
        s.execute(delete(Checkpoint).where(Checkpoint.id.in_([row.id for row in old])))
    root = job_dir.resolve()
    for row in old:
        path = Path(row.path).resolve()
        if path.is_relative_to(root) and path != root:
            shutil.rmtree(path, ignore_errors=True)
        else:
            log.warning("checkpoint at step %s of job %s is outside the job's directory; its files are kept",
                        row.step, job_id)
    return sorted(row.step for row in old)
