"""Celery tasks: thin wrappers around the task bodies of worker/runner.py, plus the reaper.

Each worker process builds one WorkerContext (database pool, samplers, embedder) when it starts,
so models load once per process, not once per task.
"""

from __future__ import annotations

import logging

from celery.signals import worker_process_init

from app.db.session import Database
from app.logs import job_context
from app.services.queues import REAP_TASK
from app.settings import get_settings
from worker.celery_app import CeleryQueue, celery_app
from worker.context import WorkerContext
from worker.lifecycle import TenantAtCapacity
from worker.reaper import reap
from worker.runner import TASKS

log = logging.getLogger(__name__)
_context: WorkerContext | None = None


def context() -> WorkerContext:
    """This process's context, built on first use (after the fork, never inherited from the parent)."""
    global _context
    if _context is None:
        settings = get_settings()
        _context = WorkerContext(settings, Database.of(settings, CeleryQueue(celery_app)))
    return _context


@worker_process_init.connect
def _start_process(**_kwargs) -> None:
    ctx = context()
    try:
        ctx.prepare_default_model()  # converted once to the cache, before the first job needs it
    except Exception:
        log.exception("could not prepare the default base model; jobs will try again")


def _register(task_name: str) -> None:
    body = TASKS[task_name]

    @celery_app.task(name=task_name, bind=True)
    def run(self, object_id: str) -> None:
        with job_context(task=task_name, job_id=object_id, celery_task_id=self.request.id,
                         redelivered=bool((self.request.delivery_info or {}).get("redelivered")) or None):
            log.info("task %s(%s) received", task_name, object_id)
            try:
                body(context(), object_id)
            except TenantAtCapacity as exc:
                # The row stays queued; a fresh message brings it back (the reaper would, much later).
                log.info("%s; trying again in %.0f s", exc, context().settings.tenant_cap_retry_s)
                raise self.retry(countdown=context().settings.tenant_cap_retry_s, max_retries=None) from None


for _name in TASKS:
    _register(_name)


@celery_app.task(name=REAP_TASK)
def reap_stale_jobs() -> dict[str, list[str]]:
    """Send again, or fail, the jobs that no live worker will finish (scheduled by Celery beat)."""
    with job_context(task=REAP_TASK):
        done = reap(context())
    return {"resent": done.resent, "failed": done.failed}
