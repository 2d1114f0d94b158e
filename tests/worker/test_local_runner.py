"""The embedded runner's lanes: an OpenAI job that waits on OpenAI for hours holds up no local work."""

from __future__ import annotations

import threading

from app.services import finetune_jobs, generations, reports
from worker import local
from worker.local import LocalRunner


class _Context:
    def prepare_default_model(self) -> None:
        pass


def test_a_remote_job_in_progress_does_not_hold_up_local_work(monkeypatch):
    release, ran = threading.Event(), []
    monkeypatch.setitem(local.TASKS, finetune_jobs.OPENAI_TASK_NAME, lambda ctx, i: (release.wait(30), ran.append(i)))
    monkeypatch.setitem(local.TASKS, reports.TASK_NAME, lambda ctx, i: ran.append(i))
    monkeypatch.setitem(local.TASKS, generations.TASK_NAME, lambda ctx, i: ran.append(i))
    runner = LocalRunner(_Context())
    monkeypatch.setattr(runner, "recover", lambda: [])
    runner.start()
    try:
        runner.enqueue(finetune_jobs.OPENAI_TASK_NAME, "ftjob_remote")
        runner.enqueue(generations.TASK_NAME, "gen_1")
        runner.enqueue(reports.TASK_NAME, "rep_1")
        assert not runner.join(timeout=2)  # the remote job is still waiting
        assert ran == ["gen_1", "rep_1"]  # local work ran meanwhile, in order
        release.set()
        assert runner.join(timeout=10) and ran == ["gen_1", "rep_1", "ftjob_remote"]
    finally:
        release.set()
        runner.stop()
