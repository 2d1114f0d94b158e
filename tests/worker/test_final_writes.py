"""A task's final status write outlasts a passing SQLite lock instead of leaving the row running."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import event

from app.db.migrate import upgrade
from app.db.models import Adapter, FinetuneJob
from app.db.session import Database
from app.settings import Settings
from tests.api.factories import insert_adapter, tenant_id_of, update_job, write_adapter_files
from tests.conftest import TEST_PEPPER, make_key
from worker import runner
from worker.context import WorkerContext

BUSY_TIMEOUT_MS = 100


@pytest.fixture
def sqlite_db(tmp_path):
    """A SQLite file whose connections wait only briefly for a lock, so a held lock fails a write fast."""
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path)
    upgrade(settings.resolved_database_url)
    db = Database.of(settings)

    @event.listens_for(db.engine, "connect")
    def _short_busy_timeout(dbapi_connection, _record) -> None:
        dbapi_connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    make_key(db, settings, "tenant-a")
    yield settings, db
    db.dispose()


def hold_write_lock(path, seconds: float) -> threading.Thread:
    """Another writer holding SQLite's write lock for ``seconds`` (taken before this returns)."""
    taken = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    return thread


def test_a_final_status_written_while_another_writer_holds_the_lock_is_retried(sqlite_db, tmp_path):
    settings, db = sqlite_db
    adapter_id = insert_adapter(db, tenant_id_of(db, "tenant-a"), write_adapter_files(tmp_path / "adapter"))
    with db.transaction() as session:
        job_id = session.get(Adapter, adapter_id).job_id
    update_job(db, job_id, status="running", owner="worker-1", finished_at=None)

    holder = hold_write_lock(settings.data_dir / "synthaug.db", seconds=1.0)
    try:
        runner._finish_job(WorkerContext(settings, db), job_id, "worker-1", "failed", error="out of memory")
    finally:
        holder.join()
    with db.transaction() as session:
        job = session.get(FinetuneJob, job_id)
        assert (job.status, job.error, job.owner) == ("failed", "out of memory", None)
