"""The embedded runner's lanes and turns: an OpenAI job that waits on OpenAI for hours holds up no
local work, and one tenant's queue of jobs holds up another tenant's by at most the job running."""

from __future__ import annotations

import threading

from app.db.migrate import upgrade
from app.db.models import Corpus, CorpusReport, Tenant
from app.db.session import Database
from app.services import finetune_jobs, generations, reports
from worker import local
from worker.local import LocalRunner


class _Context:
    def __init__(self, db: Database | None = None) -> None:
        self.db = db

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


def _report_rows(db: Database, tenant: str, count: int) -> list[str]:
    """``count`` queued report rows of a new tenant: the cheapest real tasks that carry a tenant."""
    with db.transaction() as s:
        owner = Tenant(name=tenant)
        s.add(owner)
        s.flush()
        corpora = [Corpus(tenant_id=owner.id, name=f"{tenant}-{i}") for i in range(count)]
        s.add_all(corpora)
        s.flush()
        rows = [CorpusReport(tenant_id=owner.id, corpus_id=corpus.id) for corpus in corpora]
        s.add_all(rows)
        s.flush()
        return [row.id for row in rows]


def test_tenants_take_turns_in_the_local_lane(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    upgrade(url)
    db = Database(url)
    a1, a2, a3 = _report_rows(db, "tenant-a", 3)
    (b1,) = _report_rows(db, "tenant-b", 1)
    started, release, ran = threading.Event(), threading.Event(), []

    def run(ctx, report_id):
        ran.append(report_id)
        if report_id == a1:
            started.set()
            release.wait(30)

    monkeypatch.setitem(local.TASKS, reports.TASK_NAME, run)
    runner = LocalRunner(_Context(db))
    monkeypatch.setattr(runner, "recover", lambda: [])
    runner.start()
    try:
        for report_id in (a1, a2, a3):
            runner.enqueue(reports.TASK_NAME, report_id)
        assert started.wait(10)  # A's first job runs; A's other two and then B's one queue behind it
        runner.enqueue(reports.TASK_NAME, b1)
        release.set()
        assert runner.join(timeout=10)
        assert ran == [a1, b1, a2, a3]
    finally:
        release.set()
        runner.stop()
        db.dispose()
