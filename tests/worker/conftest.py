"""A real embedded stack (database + LocalRunner + API) for worker tests, on SQLite and Postgres."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db.migrate import upgrade
from app.db.session import Database
from app.main import create_app
from app.settings import Settings
from tests.conftest import POSTGRES_URL, make_key, reset_postgres
from worker.context import WorkerContext
from worker.local import LocalRunner

WORKER_DB = "synthaug_worker_test"


def worker_postgres_url() -> str:
    """A database of its own: worker tests commit, API tests roll back."""
    base, _, _name = POSTGRES_URL.rpartition("/")
    admin = Database(POSTGRES_URL)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": WORKER_DB}).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{WORKER_DB}"'))
    admin.dispose()
    url = f"{base}/{WORKER_DB}"
    reset_postgres(url)
    return url


@dataclass
class Stack:
    settings: Settings
    db: Database
    runner: LocalRunner
    ctx: WorkerContext
    client: TestClient
    headers: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory, cache_dir) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("worker")
    url = f"sqlite:///{data_dir / 'worker.db'}" if request.param == "sqlite" else worker_postgres_url()
    upgrade(url)
    settings = Settings(env="test", data_dir=data_dir, cache_dir=cache_dir, database_url=url)
    db = Database(url)
    ctx = WorkerContext(settings, db)
    runner = LocalRunner(ctx)
    db.queue = runner
    runner.start()
    headers = {"Authorization": f"Bearer {make_key(db, settings, 'worker-tenant')}"}
    with TestClient(create_app(settings, db=db)) as client:
        yield Stack(settings, db, runner, ctx, client, headers)
    runner.stop()
    db.dispose()
