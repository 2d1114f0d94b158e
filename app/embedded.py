"""Embedded mode: SQLite (or any URL), migrations applied, the in-process runner started."""

from __future__ import annotations

from dataclasses import dataclass

from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_key
from app.db import repositories as repo
from app.settings import Settings


@dataclass
class EmbeddedStack:
    db: Database
    runner: object
    first_key: str | None


def build_embedded(settings: Settings, *, start_runner: bool = True) -> EmbeddedStack:
    """Migrate, create the first API key if there is none, and start the runner."""
    from worker.context import WorkerContext
    from worker.local import LocalRunner

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    runner = LocalRunner(WorkerContext(settings, db))
    db.queue = runner
    first_key = None
    with db.transaction() as session:
        if repo.count_keys(session) == 0:
            _tenant, first_key = create_key(session, "default", settings.key_pepper.get_secret_value())
    if start_runner:
        runner.start()
    return EmbeddedStack(db=db, runner=runner, first_key=first_key)
