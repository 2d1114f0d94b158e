"""Fixtures: real Postgres and SQLite, migrated once; each API test runs in a rolled-back transaction."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from app.db.migrate import upgrade
from app.db.session import Database
from app.main import create_app
from app.services.auth import create_key
from app.settings import Settings

POSTGRES_URL = os.environ.get("SYNTHAUG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_PEPPER = "synthaug-test-pepper"
REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CSV = REPO_ROOT / "examples" / "adress_illustrative.csv"


class RecordingQueue:
    """Collects what the API enqueues after commit (API tests do not run jobs)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.revoked: list[tuple[str, str]] = []

    def enqueue(self, task_name: str, object_id: str) -> None:
        self.sent.append((task_name, object_id))

    def revoke(self, task_name: str, object_id: str) -> None:
        self.revoked.append((task_name, object_id))


def reset_postgres(url: str) -> None:
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    db.dispose()


def fresh_postgres_database(name: str) -> str:
    """The URL of database ``name`` beside the test database, created if missing, emptied."""
    test_database = POSTGRES_URL.rpartition("/")[2]
    if test_database != "test":  # runs on their own test databases do not share (and empty) each other's
        name = f"{name}_{test_database}"
    admin = Database(POSTGRES_URL)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"{POSTGRES_URL.rpartition('/')[0]}/{name}"
    reset_postgres(url)
    return url


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Converted base models are shared by every test and every run."""
    path = Path(os.environ.get("SYNTHAUG_CACHE_DIR", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def migrated_url(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'api.db'}"
    else:
        url = POSTGRES_URL
        reset_postgres(url)
    upgrade(url)
    return url


@pytest.fixture
def settings(tmp_path) -> Settings:
    """An empty model cache: API tests do not depend on whether a model was prepared before."""
    return Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, max_upload_bytes=200_000)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def db(migrated_url, queue) -> Iterator[Database]:
    """A Database whose sessions live inside one outer transaction, rolled back after the test."""
    database = Database(migrated_url, queue)
    connection = database.engine.connect()
    outer = connection.begin()
    database.sessionmaker = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield database
    outer.rollback()
    connection.close()
    database.dispose()


@pytest.fixture
def client(settings, db) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


def make_key(db: Database, settings: Settings, tenant: str) -> str:
    with db.transaction() as session:
        _tenant, raw = create_key(session, tenant, settings.key_pepper.get_secret_value())
    return raw


@pytest.fixture
def auth(db, settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(db, settings, 'tenant-a')}"}


@pytest.fixture
def other_auth(db, settings) -> dict[str, str]:
    return {"X-API-Key": make_key(db, settings, 'tenant-b')}


@dataclass
class Stack:
    """The embedded service: database, in-process runner and the API in front of them."""

    settings: Settings
    db: Database
    runner: Any  # worker.local.LocalRunner
    ctx: Any  # worker.context.WorkerContext
    client: TestClient
    headers: dict[str, str]


@contextmanager
def embedded_stack(settings: Settings, tenant: str) -> Iterator[Stack]:
    """Migrate ``settings``' database, start a runner on it and an API client with a key of ``tenant``."""
    from worker.context import WorkerContext
    from worker.local import LocalRunner

    url = settings.resolved_database_url
    upgrade(url)
    db = Database(url)
    ctx = WorkerContext(settings, db)
    runner = LocalRunner(ctx)
    db.queue = runner
    runner.start()
    try:
        headers = {"Authorization": f"Bearer {make_key(db, settings, tenant)}"}
        with TestClient(create_app(settings, db=db)) as client:
            yield Stack(settings, db, runner, ctx, client, headers)
    finally:
        runner.stop()
        db.dispose()
