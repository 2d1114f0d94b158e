"""Alembic environment: the URL comes from the config (set by ``synthaug db upgrade``) or Settings."""

from __future__ import annotations

from alembic import context

from app.db.base import Base
from app.db.session import create_db_engine
from app.settings import get_settings

import app.db.models  # noqa: F401  (registers the tables on Base.metadata)

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=Base.metadata, render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_db_engine(_url())
    with engine.connect() as connection:
        # Batch mode lets ALTERs work on SQLite, which cannot alter most things in place.
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
