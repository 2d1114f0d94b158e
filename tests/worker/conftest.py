"""A real embedded stack (database + LocalRunner + API) for worker tests, on SQLite and Postgres."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from app.db.migrate import upgrade
from app.db.session import Database
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_PEPPER, fresh_postgres_database, make_key
from worker.context import WorkerContext
from worker.local import LocalRunner

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
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'worker.db'}"
    else:  # a database of its own: worker tests commit, API tests roll back
        url = fresh_postgres_database("synthaug_worker_test")
    upgrade(url)
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir, database_url=url)
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
