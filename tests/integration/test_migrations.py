"""The Alembic history from empty, on SQLite and Postgres, matches the models and reverses cleanly."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.db.base import Base
from app.db.migrate import downgrade, upgrade
from app.db.session import Database
from app.domain.markers import count_markers
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


def test_samples_stored_before_0006_get_their_marker_counts(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0005")
    texts = ["uh the the boy is um taking", "The girl reaches for a cookie."]
    with sqlite3.connect(tmp_path / "m.db") as conn:  # foreign keys are off: samples alone suffice
        conn.executemany(
            "INSERT INTO samples (corpus_id, generation_id, \"index\", label, text, status, checks, provenance, "
            "created_at) VALUES ('c', 'g', ?, 'impaired', ?, 'accepted', '{}', '{}', '2026-12-01')",
            list(enumerate(texts)),
        )
    upgrade(url, "0006")  # (0007 tallies samples per corpus, and these name no stored corpus)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        stored = conn.execute("SELECT marker_words, marker_fillers, marker_repetitions FROM samples "
                              "ORDER BY id").fetchall()
    assert stored == [tuple(count_markers(t).values()) for t in texts] == [(7, 2, 1), (6, 0, 0)]


_BEFORE_0007 = [
    "INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'a', '2026-12-01')",
    "INSERT INTO corpora (id, tenant_id, name, created_at) VALUES ('corp_a', 'ten_a', 'c', '2026-12-01')",
] + [
    "INSERT INTO samples (corpus_id, generation_id, \"index\", label, text, status, reject_reason, checks, provenance, "
    f"created_at, marker_words, marker_fillers, marker_repetitions) VALUES ('corp_a', 'gen_a', {i}, 'control', 'x', "
    f"'{status}', {reason}, '{{}}', '{{}}', '2026-12-01', 10, {fillers}, 1)"
    for i, status, reason, fillers in ((0, "accepted", "NULL", 0), (1, "accepted", "NULL", 2),
                                       (2, "rejected", "'truncated'", 0))
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_samples_stored_before_0007_are_tallied(tmp_path, dialect):
    """The backfill; the triggers that count later samples are tested through the API (test_corpora)."""
    url = f"sqlite:///{tmp_path / 'm.db'}" if dialect == "sqlite" else fresh_postgres_database("synthaug_tally_test")
    upgrade(url, "0006")
    # Samples alone suffice, without a generation row: foreign keys go unchecked (a plain sqlite3
    # connection checks none; Postgres checks them by triggers, which replica mode skips).
    if dialect == "sqlite":
        with sqlite3.connect(tmp_path / "m.db") as conn:
            for statement in _BEFORE_0007:
                conn.execute(statement)
    else:
        db = Database(url)
        with db.engine.begin() as conn:
            conn.execute(text("SET session_replication_role = replica"))
            for statement in _BEFORE_0007:
                conn.execute(text(statement))
        db.dispose()
    upgrade(url)
    db = Database(url)
    with db.engine.begin() as conn:
        tallies = conn.execute(text("SELECT label, status, reason, n, words, fillers, repetitions "
                                    "FROM corpus_tallies ORDER BY label, status, reason")).all()
    db.dispose()
    assert tallies == [("control", "accepted", "", 2, 20, 2, 2), ("control", "rejected", "truncated", 1, 10, 0, 1)]
