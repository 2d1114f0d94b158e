"""The rules that make at-least-once delivery run each job once: claim, heartbeat, reaper, sample inserts.

On SQLite and Postgres, with rows written directly (no model is loaded here).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Iterator

import pytest

from app.db.base import utcnow
from app.db.migrate import upgrade
from app.db.models import Adapter, Corpus, CorpusReport, Dataset, FinetuneJob, Generation, JobEvent, PromptSetRow, Tenant
from app.db.repositories import accepted_samples, insert_samples
from app.db.session import Database
from app.services import finetune_jobs, generations, reports
from app.settings import Settings
from tests.conftest import TEST_PEPPER, RecordingQueue, fresh_postgres_database
from worker.context import WorkerContext
from worker.lifecycle import TenantAtCapacity, check_tenant_capacity, claim, heartbeat, owns
from worker.reaper import reap
from worker.runner import run_generation

STALE_S = 5.0


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def url(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('lifecycle') / 'l.db'}"
    else:
        url = fresh_postgres_database("synthaug_lifecycle_test")
    upgrade(url)
    return url


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def db(url, queue) -> Iterator[Database]:
    database = Database(url, queue)
    yield database
    database.dispose()


@pytest.fixture
def ctx(db, tmp_path) -> WorkerContext:
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, max_attempts=3,
                        heartbeat_interval_s=0.2, stale_after_s=STALE_S, requeue_queued_after_s=600)
    return WorkerContext(settings, db)


@pytest.fixture
def rows(db) -> dict[str, str]:
    """A tenant with one of each job row, queued: a fine-tune, a generation and a report."""
    with db.transaction() as s:
        tenant = Tenant(name=f"t-{time.time_ns()}")
        s.add(tenant)
        s.flush()
        dataset = Dataset(tenant_id=tenant.id, name="d", filename="d.csv", column_mapping={}, report={})
        prompt_set = PromptSetRow(tenant_id=tenant.id, name="p", spec={})
        s.add_all([dataset, prompt_set])
        s.flush()
        job = FinetuneJob(tenant_id=tenant.id, dataset_id=dataset.id, prompt_set_id=prompt_set.id,
                          base_model="smollm2-135m-instruct", method="qlora", hyperparameters={})
        corpus = Corpus(tenant_id=tenant.id, dataset_id=dataset.id, name="c")
        s.add_all([job, corpus])
        s.flush()
        adapter = Adapter(tenant_id=tenant.id, job_id=job.id, prompt_set_id=prompt_set.id,
                          base_model=job.base_model, method="qlora", path="/nowhere")
        s.add(adapter)
        s.flush()
        generation = Generation(tenant_id=tenant.id, adapter_id=adapter.id, corpus_id=corpus.id, counts={"control": 3},
                                n=3, params={})
        report = CorpusReport(tenant_id=tenant.id, corpus_id=corpus.id)
        s.add_all([generation, report])
        s.flush()
        return {"job": job.id, "generation": generation.id, "report": report.id}


def set_row(db: Database, model: type, row_id: str, **values) -> None:
    with db.transaction() as s:
        row = s.get(model, row_id)
        for key, value in values.items():
            setattr(row, key, value)


def get_row(db: Database, model: type, row_id: str):
    with db.transaction() as s:
        return s.get(model, row_id)


def claim_row(db: Database, model: type, row_id: str, owner: str, max_attempts: int = 3) -> bool:
    with db.transaction() as s:
        return claim(s.get(model, row_id, with_for_update=True), max_attempts, owner, STALE_S)


class TestClaim:
    def test_a_queued_row_is_claimed_with_its_owner_and_a_heartbeat(self, db, rows):
        assert claim_row(db, Generation, rows["generation"], "node:1:a")
        row = get_row(db, Generation, rows["generation"])
        assert (row.status, row.attempts, row.owner) == ("running", 1, "node:1:a")
        assert utcnow() - row.heartbeat_at < timedelta(seconds=2)

    def test_a_running_row_with_a_fresh_heartbeat_is_left_to_its_owner(self, db, rows):
        assert claim_row(db, Generation, rows["generation"], "node:1:a")
        assert not claim_row(db, Generation, rows["generation"], "node:2:b")
        row = get_row(db, Generation, rows["generation"])
        assert (row.status, row.attempts, row.owner) == ("running", 1, "node:1:a")

    def test_a_running_row_with_a_stale_heartbeat_is_taken_over(self, db, rows):
        assert claim_row(db, Generation, rows["generation"], "node:1:a")
        set_row(db, Generation, rows["generation"], heartbeat_at=utcnow() - timedelta(seconds=STALE_S + 1))
        assert claim_row(db, Generation, rows["generation"], "node:2:b")
        row = get_row(db, Generation, rows["generation"])
        assert (row.status, row.attempts, row.owner) == ("running", 2, "node:2:b")

    def test_an_owned_row_mirroring_a_remote_status_is_left_to_its_owner(self, db, rows):
        # An openai job's driver shows the remote status (queued at OpenAI) while it holds the row.
        assert claim_row(db, FinetuneJob, rows["job"], "node:1:a")
        set_row(db, FinetuneJob, rows["job"], status="queued")
        assert not claim_row(db, FinetuneJob, rows["job"], "node:2:b")
        set_row(db, FinetuneJob, rows["job"], heartbeat_at=utcnow() - timedelta(seconds=STALE_S + 1))
        assert claim_row(db, FinetuneJob, rows["job"], "node:2:b")

    def test_finished_cancelled_and_exhausted_rows_are_not_run(self, db, rows):
        set_row(db, CorpusReport, rows["report"], status="succeeded")
        assert not claim_row(db, CorpusReport, rows["report"], "node:1:a")
        assert get_row(db, CorpusReport, rows["report"]).attempts == 0

        set_row(db, FinetuneJob, rows["job"], cancel_requested=True)
        assert not claim_row(db, FinetuneJob, rows["job"], "node:1:a")
        assert get_row(db, FinetuneJob, rows["job"]).status == "cancelled"

        set_row(db, Generation, rows["generation"], attempts=3)
        assert not claim_row(db, Generation, rows["generation"], "node:1:a")
        row = get_row(db, Generation, rows["generation"])
        assert row.status == "failed" and "gave up after 3 attempts" in row.error


class TestHeartbeat:
    def test_it_keeps_the_row_fresh_and_notices_when_the_row_is_taken(self, db, rows):
        assert claim_row(db, CorpusReport, rows["report"], "node:1:a")
        set_row(db, CorpusReport, rows["report"], heartbeat_at=utcnow() - timedelta(hours=1))
        with heartbeat(db, CorpusReport, rows["report"], "node:1:a", 0.1) as beat:
            time.sleep(0.5)
            assert utcnow() - get_row(db, CorpusReport, rows["report"]).heartbeat_at < timedelta(seconds=1)
            assert not beat.lost.is_set()
            set_row(db, CorpusReport, rows["report"], status="queued", owner=None)  # the reaper took it back
            assert beat.lost.wait(2)
        assert not owns(get_row(db, CorpusReport, rows["report"]), "node:1:a")


class TestReaper:
    def test_a_running_job_without_a_live_worker_is_queued_and_sent_again(self, ctx, db, queue, rows):
        assert claim_row(db, FinetuneJob, rows["job"], "node:1:a")
        set_row(db, FinetuneJob, rows["job"], heartbeat_at=utcnow() - timedelta(seconds=STALE_S + 1))
        done = reap(ctx)
        assert rows["job"] in done.resent and (finetune_jobs.TASK_NAME, rows["job"]) in queue.sent
        job = get_row(db, FinetuneJob, rows["job"])
        assert (job.status, job.owner, job.attempts) == ("queued", None, 1) and job.sent_at is not None
        with db.transaction() as s:
            messages = [e.message for e in s.query(JobEvent).filter_by(job_id=rows["job"])]
        assert any("node:1:a stopped (no heartbeat" in m and "sent again" in m for m in messages)

    def test_an_openai_job_whose_driver_died_is_sent_to_its_own_task(self, ctx, db, queue, rows):
        set_row(db, FinetuneJob, rows["job"], method="openai", status="validating_files", attempts=1,
                owner="node:1:a", heartbeat_at=utcnow() - timedelta(seconds=STALE_S + 1))
        reap(ctx)
        assert (finetune_jobs.OPENAI_TASK_NAME, rows["job"]) in queue.sent
        assert get_row(db, FinetuneJob, rows["job"]).status == "queued"

    def test_a_job_out_of_attempts_fails_with_the_reason(self, ctx, db, queue, rows):
        set_row(db, Generation, rows["generation"], status="running", attempts=3, owner="node:1:a",
                heartbeat_at=utcnow() - timedelta(seconds=60))
        done = reap(ctx)
        assert rows["generation"] in done.failed and (generations.TASK_NAME, rows["generation"]) not in queue.sent
        row = get_row(db, Generation, rows["generation"])
        assert row.status == "failed" and "gave up after 3 attempts" in row.error and "no heartbeat" in row.error

    def test_live_and_recently_sent_jobs_are_left_alone(self, ctx, db, queue, rows):
        assert claim_row(db, Generation, rows["generation"], "node:1:a")  # fresh heartbeat
        done = reap(ctx)  # the job and the report are queued, sent just now (created_at)
        assert rows["generation"] not in done.resent and rows["job"] not in done.resent
        assert rows["report"] not in done.resent and queue.sent == []

    def test_a_job_queued_too_long_is_sent_again(self, ctx, db, queue, rows):
        set_row(db, CorpusReport, rows["report"], sent_at=utcnow() - timedelta(hours=1))
        reap(ctx)
        assert (reports.TASK_NAME, rows["report"]) in queue.sent
        assert utcnow() - get_row(db, CorpusReport, rows["report"]).sent_at < timedelta(seconds=5)


class TestTenantCap:
    """Distributed mode: a claim that would take a tenant over max_running_per_tenant leaves the row queued."""

    def check(self, db, model, row_id, cap):
        with db.transaction() as s:
            check_tenant_capacity(s, s.get(model, row_id, with_for_update=True), cap)

    def test_a_tenant_at_its_cap_waits_and_below_it_runs(self, db, rows):
        set_row(db, FinetuneJob, rows["job"], status="running", owner="w1", heartbeat_at=utcnow())
        with pytest.raises(TenantAtCapacity, match="1 jobs running"):
            self.check(db, Generation, rows["generation"], 1)
        self.check(db, Generation, rows["generation"], 2)
        self.check(db, Generation, rows["generation"], 0)  # no cap

    def test_only_local_work_counts(self, db, rows):
        set_row(db, FinetuneJob, rows["job"], status="running", method="openai", owner="w1", heartbeat_at=utcnow())
        self.check(db, Generation, rows["generation"], 1)

    def test_another_tenants_jobs_do_not_count(self, db, rows):
        other = self.other_tenants_running_job(db, rows)
        set_row(db, FinetuneJob, other, status="running", owner="w1", heartbeat_at=utcnow())
        self.check(db, Generation, rows["generation"], 1)

    def test_the_delivery_leaves_the_row_queued_in_distributed_mode_only(self, db, rows, ctx):
        set_row(db, FinetuneJob, rows["job"], status="running", owner="w1", heartbeat_at=utcnow())
        distributed = WorkerContext(ctx.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0",
                                                                     "max_running_per_tenant": 1}), db)
        with pytest.raises(TenantAtCapacity):
            run_generation(distributed, rows["generation"])
        gen = get_row(db, Generation, rows["generation"])
        assert (gen.status, gen.attempts, gen.owner) == ("queued", 0, None)
        embedded = WorkerContext(ctx.settings.model_copy(update={"max_running_per_tenant": 1}), db)
        assert embedded.settings.tenant_running_cap == 0

    def test_the_celery_task_asks_to_be_delivered_again(self, db, rows, ctx, monkeypatch):
        from celery.exceptions import Retry

        from worker import tasks

        set_row(db, FinetuneJob, rows["job"], status="running", owner="w1", heartbeat_at=utcnow())
        settings = ctx.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0", "max_running_per_tenant": 1})
        monkeypatch.setattr(tasks, "_context", WorkerContext(settings, db))
        with pytest.raises(Retry):  # called directly, the task raises what a worker turns into a delayed message
            tasks.celery_app.tasks[generations.TASK_NAME](rows["generation"])
        assert get_row(db, Generation, rows["generation"]).status == "queued"

    def other_tenants_running_job(self, db, rows) -> str:
        with db.transaction() as s:
            job = s.get(FinetuneJob, rows["job"])
            tenant = Tenant(name=f"other-{time.time_ns()}")
            s.add(tenant)
            s.flush()
            other = FinetuneJob(tenant_id=tenant.id, dataset_id=job.dataset_id, prompt_set_id=job.prompt_set_id,
                                base_model=job.base_model, method="qlora", hyperparameters={})
            s.add(other)
            s.flush()
            return other.id


class TestSampleInserts:
    def sample(self, generation: Generation, index: int, text: str) -> dict:
        return dict(corpus_id=generation.corpus_id, generation_id=generation.id, index=index, label="control",
                    text=text, status="accepted", reject_reason=None, finish_reason="stop", checks={},
                    provenance={}, created_at=utcnow())

    def test_a_sample_stored_already_is_skipped_not_duplicated_or_failed(self, db, rows):
        with db.transaction() as s:
            gen = s.get(Generation, rows["generation"])
            assert insert_samples(s, [self.sample(gen, 0, "first"), self.sample(gen, 1, "second")]) == 2
        with db.transaction() as s:  # a second delivery of the same chunk, and one new index
            gen = s.get(Generation, rows["generation"])
            assert insert_samples(s, [self.sample(gen, 1, "again"), self.sample(gen, 2, "third")]) == 1
            generations.refresh_counts(s, gen)
            assert gen.done == 3
        with db.transaction() as s:
            stored = {i: t for _, _, i, t in accepted_samples(s, get_row(db, Generation, rows["generation"]).corpus_id)}
        assert stored == {0: "first", 1: "second", 2: "third"}
