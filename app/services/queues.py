"""Which Celery queue each task goes to: heavy GPU work apart from light work."""

from __future__ import annotations

from app.services import finetune_jobs, generations, reports

TRAIN, GENERATE, DEFAULT = "train", "generate", "default"
QUEUES = (TRAIN, GENERATE, DEFAULT)
REAP_TASK = "maintenance.reap"

ROUTES: dict[str, str] = {
    finetune_jobs.TASK_NAME: TRAIN,
    finetune_jobs.OPENAI_TASK_NAME: DEFAULT,  # polls a remote job: no GPU, mostly waiting
    generations.TASK_NAME: GENERATE,
    reports.TASK_NAME: DEFAULT,
    REAP_TASK: DEFAULT,
}


def queue_of(task_name: str) -> str:
    """The queue a task is sent to; an unknown task name is a programming error."""
    try:
        return ROUTES[task_name]
    except KeyError:
        raise ValueError(f"unknown task '{task_name}'") from None
