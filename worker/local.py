"""Embedded mode: the same task bodies as the Celery workers, on a background thread."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import select

from app.db import repositories as repo
from app.db.migrate import upgrade
from app.db.models import CorpusReport, FinetuneJob, Generation
from app.db.session import Database
from app.logs import job_context
from app.services import finetune_jobs, generations, reports
from app.services.auth import create_key
from app.settings import Settings
from worker.context import WorkerContext
from worker.fair_queue import FairQueue
from worker.runner import TASKS

log = logging.getLogger(__name__)


class LocalRunner:
    """Lanes of (task name, id), each run one at a time; implements the app's JobQueue.

    Local work (training, sampling, reports) runs in one lane; driving OpenAI fine-tunes, which
    mostly waits on a remote job for hours, runs in a lane of its own so it never holds up local
    work. Within a lane tenants take turns (each tenant's own jobs in order), so one tenant's
    queue of long jobs delays another's by at most the job already running."""

    LANES = ("local", "remote")

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._queues: dict[str, FairQueue[tuple[str, str]]] = {lane: FairQueue() for lane in self.LANES}
        self._threads: list[threading.Thread] = []

    @staticmethod
    def lane_of(task_name: str) -> str:
        return "remote" if task_name == finetune_jobs.OPENAI_TASK_NAME else "local"

    def enqueue(self, task_name: str, object_id: str) -> None:
        if task_name not in TASKS:
            raise ValueError(f"unknown task '{task_name}'")
        self._queues[self.lane_of(task_name)].put((task_name, object_id), self._tenant_of(task_name, object_id))

    def _tenant_of(self, task_name: str, object_id: str) -> str | None:
        """The tenant whose turn a task takes (None when its row cannot be read: it then runs in a turn of its own)."""
        model = _ROW_OF_TASK.get(task_name)
        if model is None:
            return None
        try:
            with self.ctx.db.transaction(write=False) as s:
                return s.scalar(select(model.tenant_id).where(model.id == object_id))
        except Exception:
            log.warning("could not read the tenant of %s(%s); it queues on its own", task_name, object_id,
                        exc_info=True)
            return None

    def revoke(self, task_name: str, object_id: str) -> None:
        """Nothing to withdraw: the task finds its row cancelled and does nothing."""

    def start(self) -> None:
        """Re-enqueue what a previous process left queued or running, then start working."""
        self.recover()
        self._threads = [threading.Thread(target=self._work, args=(lane,), name=f"synthaug-runner-{lane}", daemon=True)
                         for lane in self.LANES]
        for thread in self._threads:
            thread.start()

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
            for lane_queue in self._queues.values():
                lane_queue.join()
            done.set()

        threading.Thread(target=_wait, daemon=True).start()
        return done.wait(timeout)

    def stop(self) -> None:
        """Run what is queued, then stop."""
        for lane_queue in self._queues.values():
            lane_queue.close()
        for thread in self._threads:
            thread.join()
        if self._threads:  # the closed queues were drained: fresh ones let the runner start again
            self._queues = {lane: FairQueue() for lane in self.LANES}
        self._threads = []

    def _work(self, lane: str) -> None:
        if lane == "local":
            try:
                self.ctx.prepare_default_model()
            except Exception:
                log.exception("could not prepare the default base model; jobs will try again")
        lane_queue = self._queues[lane]
        while (item := lane_queue.get()) is not None:
            task_name, object_id = item
            try:
                with job_context(task=task_name, job_id=object_id):
                    TASKS[task_name](self.ctx, object_id)
            except Exception:
                log.exception("task %s(%s) crashed", task_name, object_id)
            finally:
                lane_queue.task_done()


_ROW_OF_TASK = {finetune_jobs.TASK_NAME: FinetuneJob, finetune_jobs.OPENAI_TASK_NAME: FinetuneJob,
                generations.TASK_NAME: Generation, reports.TASK_NAME: CorpusReport}


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
