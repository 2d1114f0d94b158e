"""Distributed mode: the Celery application (Redis broker) and the queue the API sends job ids with.

Messages carry only a task name and an object id, as JSON; the database holds everything else.
Delivery is at least once (late acks, redelivered when a worker dies or a task outlives the broker's
visibility timeout); the task bodies make that safe (worker/lifecycle.py).

    celery -A worker.celery_app ...      # the module-level app, configured from SYNTHAUG_* settings
    synthaug worker --queues train,generate
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue

from app.logs import configure_logging
from app.services.queues import DEFAULT, QUEUES, REAP_TASK, ROUTES, queue_of
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_celery(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` with synthaug's queues, routes, acks and limits."""
    app = Celery("synthaug", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the database
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=DEFAULT,
        task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
        # A task is acknowledged when it ends, so a worker that dies mid-task loses nothing; a child
        # process killed mid-task gives its message back at once instead of at the visibility timeout.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a GPU worker holds no job it is not running
        # A broker that restarts (or drops the connection) leaves running tasks running: their rows, not
        # the broker, say who runs them. Celery 6's default would cancel them for redelivery, losing the
        # training since the last checkpoint over a seconds-long Redis outage.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        # kombu 5.7 scans for messages past their visibility timeout on every 10th 10-s tick only; a scan
        # is one small ZRANGE, so scan on every tick as earlier releases did.
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s,
                                  "unacked_restore_throttle": 1},
        broker_connection_timeout=settings.broker_timeout_s,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,  # app.logs configures logging, text or JSON
        worker_redirect_stdouts=False,  # pool processes log to stderr themselves, not through a proxy
        worker_send_task_events=True,  # for Flower
        # No "task-sent" event: it was a second Redis publish in every submission (a twentieth of its
        # time); a queued job is its row, and Flower lists a task from the worker's "received" on.
        task_send_sent_event=False,
        beat_schedule={
            "reap": {"task": REAP_TASK, "schedule": settings.reaper_interval_s, "options": {"queue": DEFAULT}},
        },
    )
    return app


class CeleryQueue:
    """The JobQueue of distributed mode: sends (task, id) to the task's queue after the commit.

    The task id is the object id, so a cancel can revoke it by name. A send that fails (broker down)
    is logged, not raised: the row is committed as queued and the reaper sends it again."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue(self, task_name: str, object_id: str) -> None:
        try:
            self.app.send_task(
                task_name, args=[object_id], task_id=object_id, queue=queue_of(task_name),
                retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except ValueError:
            raise
        except Exception as exc:
            log.error("could not send %s(%s) to the broker (%s: %s); the reaper will send it again",
                      task_name, object_id, type(exc).__name__, exc)

    def revoke(self, task_name: str, object_id: str) -> None:
        try:
            self.app.control.revoke(object_id)
        except Exception as exc:  # the row is cancelled; a delivery that arrives anyway does nothing
            log.warning("could not revoke %s(%s): %s: %s", task_name, object_id, type(exc).__name__, exc)


@setup_logging.connect
def _configure_logging(**_kwargs) -> None:
    """Celery leaves logging to us: text or JSON lines (SYNTHAUG_LOG_FORMAT), with job ids, every process."""
    configure_logging(get_settings())


celery_app = create_celery(get_settings())
