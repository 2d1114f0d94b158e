"""The Alembic history from empty, on SQLite and Postgres, matches the models and reverses cleanly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db.base import Base
from app.db.migrate import downgrade, upgrade
from app.db.session import Database
from tests.conftest import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return fresh_postgres_database("synthaug_migration_test")


def _tables(url: str) -> set[str]:
    db = Database(url)
    names = set(inspect(db.engine).get_table_names())
    db.dispose()
    return names


class TestMigrations:
    def test_upgrade_from_empty_matches_the_models(self, empty_url):
        upgrade(empty_url)
        assert set(Base.metadata.tables) <= _tables(empty_url)
        db = Database(empty_url)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        db.dispose()
        assert diff == []

    def test_downgrade_to_base_and_up_again(self, empty_url):
        upgrade(empty_url)
        downgrade(empty_url, "base")
        assert _tables(empty_url) <= {"alembic_version"}
        upgrade(empty_url)
        assert set(Base.metadata.tables) <= _tables(empty_url)
