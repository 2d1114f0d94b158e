"""A real embedded stack (database + LocalRunner + API) for worker tests, on SQLite and Postgres."""

from __future__ import annotations

from typing import Iterator

import pytest

from app.settings import Settings
from tests.conftest import TEST_PEPPER, Stack, embedded_stack, fresh_postgres_database


@pytest.fixture(scope="module")
def stack_settings() -> dict:
    """Settings of a module's stack; reports are computed only where a module asks (tests/worker/test_reports.py)."""
    return {"report_on_generation": False}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory, cache_dir, stack_settings) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("worker")
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'worker.db'}"
    else:  # a database of its own: worker tests commit, API tests roll back
        url = fresh_postgres_database("synthaug_worker_test")
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir, database_url=url,
                        **stack_settings)
    with embedded_stack(settings, "worker-tenant") as running:
        yield running
