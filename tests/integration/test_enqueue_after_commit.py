"""Enqueue after commit, with transactions that really commit: the API tests' rolled-back outer
transaction turns every request's COMMIT into a savepoint release, so these run on a Database of
their own (a SQLite file, a Postgres database) and look at the row from another connection."""

from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from app.db.migrate import upgrade
from app.db.models import FinetuneJob
from app.db.session import Database, enqueue_after_commit
from app.main import create_app
from app.services import finetune_jobs
from app.settings import Settings
from tests.api.factories import create_job, upload_small_dataset
from tests.conftest import TEST_PEPPER, fresh_postgres_database, make_key


class LookingQueue:
    """A queue that, as each id arrives, reads that job's row through a connection of its own: a row
    not yet committed is not there to read."""

    def __init__(self, url: str) -> None:
        # A plain engine: none of the app's session machinery between this reader and the file or server.
        self.engine = create_engine(url)
        self.received: list[tuple[str, str, str | None]] = []

    def enqueue(self, task_name: str, object_id: str) -> None:
        with self.engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM finetune_jobs WHERE id = :id"), {"id": object_id}).scalar()
        self.received.append((task_name, object_id, status))

    def revoke(self, task_name: str, object_id: str) -> None:
        raise AssertionError("nothing is cancelled here")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def url(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('commit') / 'commit.db'}"
    else:
        url = fresh_postgres_database("synthaug_commit_test")
    upgrade(url)
    return url


@pytest.fixture
def queue(url) -> Iterator[LookingQueue]:
    looking = LookingQueue(url)
    yield looking
    looking.engine.dispose()


@pytest.fixture
def db(url, queue) -> Iterator[Database]:
    database = Database(url, queue)
    yield database
    database.dispose()


@pytest.fixture
def client(db, tmp_path) -> Iterator[TestClient]:
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path)
    with TestClient(create_app(settings, db=db)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {make_key(db, settings, f'tenant-{tmp_path.name}')}"
        yield test_client


def copy_of(db: Database, job_id: str, **columns) -> FinetuneJob:
    """A new queued job like ``job_id`` (not added to any session)."""
    with db.transaction() as s:
        job = s.get(FinetuneJob, job_id)
        return FinetuneJob(**{c: getattr(job, c) for c in ("tenant_id", "dataset_id", "prompt_set_id", "base_model",
                                                            "method", "hyperparameters", "seed")}, **columns)


class TestEnqueueAfterCommit:
    def test_the_queue_receives_a_created_job_once_its_row_is_committed(self, client, queue):
        dataset = upload_small_dataset(client, {})
        assert queue.received == []  # an upload runs no job
        response = create_job(client, {}, dataset["id"])
        assert response.status_code == 201, response.text
        assert queue.received == [(finetune_jobs.TASK_NAME, response.json()["id"], "queued")]

    def test_a_rolled_back_transaction_enqueues_nothing(self, client, db, queue):
        job_id = create_job(client, {}, upload_small_dataset(client, {})["id"]).json()["id"]
        queue.received.clear()
        with pytest.raises(RuntimeError), db.transaction() as s:
            job = copy_of(db, job_id)
            s.add(job)
            s.flush()
            enqueue_after_commit(s, finetune_jobs.TASK_NAME, job.id)
            raise RuntimeError("the request failed after its job was created")
        with db.transaction() as s:
            assert s.get(FinetuneJob, job.id) is None
        assert queue.received == []

    def test_a_failed_commit_enqueues_nothing_and_the_next_commit_sends_only_its_own(self, client, db, queue):
        job_id = create_job(client, {}, upload_small_dataset(client, {})["id"]).json()["id"]
        queue.received.clear()
        # The insert is flushed only by the commit, and fails there: the id is already taken.
        with pytest.raises(IntegrityError), db.transaction() as s:
            s.add(copy_of(db, job_id, id=job_id))
            enqueue_after_commit(s, finetune_jobs.TASK_NAME, "ftjob_never_committed")
        assert queue.received == []
        with db.transaction() as s:
            job = copy_of(db, job_id)
            s.add(job)
            s.flush()
            enqueue_after_commit(s, finetune_jobs.TASK_NAME, job.id)
        assert queue.received == [(finetune_jobs.TASK_NAME, job.id, "queued")]
        with db.transaction() as s:
            assert s.scalars(select(FinetuneJob.id).where(FinetuneJob.id == job_id)).all() == [job_id]
