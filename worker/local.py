"""Embedded mode: the same task bodies as the Celery workers, on a background thread."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from app.db import repositories as repo
from app.db.migrate import upgrade
from app.db.models import CorpusReport, FinetuneJob, Generation
from app.db.session import Database
from app.logs import job_context
from app.services import finetune_jobs, generations, reports
from app.services.auth import create_key
from app.settings import Settings
from worker.context import WorkerContext
from worker.runner import TASKS

log = logging.getLogger(__name__)
_STOP = ("", "")


class LocalRunner:
    """A FIFO of (task name, id) run one at a time; implements the app's JobQueue."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def enqueue(self, task_name: str, object_id: str) -> None:
        if task_name not in TASKS:
            raise ValueError(f"unknown task '{task_name}'")
        self._queue.put((task_name, object_id))

    def revoke(self, task_name: str, object_id: str) -> None:
        """Nothing to withdraw: the task finds its row cancelled and does nothing."""

    def start(self) -> None:
        """Re-enqueue what a previous process left queued or running, then start working."""
        self.recover()
        self._thread = threading.Thread(target=self._work, name="synthaug-runner", daemon=True)
        self._thread.start()

    def recover(self) -> list[str]:
        """Jobs left queued or running (e.g. by a crash) go back on the queue; returns their ids.

        This runner is the only worker of its database, so a row left running has no live owner
        whatever its heartbeat says: its heartbeat is cleared so the next claim takes it over."""
        pending = []
        with self.ctx.db.transaction() as s:
            for model in (FinetuneJob, Generation, CorpusReport):
                for row in repo.unfinished(s, model):
                    row.heartbeat_at = None
                    pending.append((_task_of(row), row.id))
        for task_name, object_id in pending:
            self.enqueue(task_name, object_id)
        return [object_id for _, object_id in pending]

    def join(self, timeout: float | None = None) -> bool:
        """Wait until everything enqueued so far has run; False on timeout."""
        done = threading.Event()

        def _wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=_wait, daemon=True).start()
        return done.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        try:
            self.ctx.prepare_default_model()
        except Exception:
            log.exception("could not prepare the default base model; jobs will try again")
        while True:
            task_name, object_id = self._queue.get()
            try:
                if (task_name, object_id) == _STOP:
                    return
                with job_context(task=task_name, job_id=object_id):
                    TASKS[task_name](self.ctx, object_id)
            except Exception:
                log.exception("task %s(%s) crashed", task_name, object_id)
            finally:
                self._queue.task_done()


def _task_of(row) -> str:
    if isinstance(row, FinetuneJob):
        return finetune_jobs.task_name_of(row)
    return generations.TASK_NAME if isinstance(row, Generation) else reports.TASK_NAME


@dataclass
class EmbeddedStack:
    db: Database
    runner: LocalRunner
    first_key: str | None


def start_embedded(settings: Settings) -> EmbeddedStack:
    """Embedded mode: migrate, create the first API key if there is none, start the runner."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    db = Database.of(settings)
    runner = LocalRunner(WorkerContext(settings, db))
    db.queue = runner
    first_key = None
    with db.transaction() as session:
        if repo.count_keys(session) == 0:
            _tenant, first_key = create_key(session, "default", settings.key_pepper.get_secret_value())
    runner.start()
    return EmbeddedStack(db=db, runner=runner, first_key=first_key)
