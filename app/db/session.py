"""Engine and sessions; enqueued job ids are sent only after their transaction commits."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from app.settings import Settings

_PENDING = "synthaug_pending_enqueues"
_QUEUE = "synthaug_queue"
# Execution option of a session that only reads: on SQLite it begins without taking the write lock.
READ_ONLY = "synthaug_read_only"


class JobQueue(Protocol):
    """Carries job ids to whatever runs them (embedded runner or Celery)."""

    def enqueue(self, task_name: str, object_id: str) -> None: ...

    def revoke(self, task_name: str, object_id: str) -> None:
        """Drop a queued task's message if the queue can (its row says cancelled either way)."""


def pool_options(settings: "Settings") -> dict[str, Any]:
    """Connection-pool settings: a server database's (Postgres) from the settings; SQLite's sized to
    the sync threadpool (its connections are cheap) with the same short wait before a 503."""
    if settings.resolved_database_url.startswith("sqlite"):
        return {"pool_size": settings.sqlite_pool_size, "max_overflow": 0, "pool_timeout": settings.db_pool_timeout_s}
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
        "pool_recycle": settings.db_pool_recycle_s,
    }


def create_db_engine(url: str, pool: dict[str, Any] | None = None) -> Engine:
    """An engine; a server database gets a pool that pings a connection before handing it out (a
    restarted server costs one failed ping, not a failed request); SQLite gets WAL, a busy timeout,
    real SAVEPOINT support and write transactions that take the write lock up front."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, **(pool or {}))
    # An in-memory database lives in one connection (SingletonThreadPool): no pool to size.
    sized = {} if ":memory:" in url else (pool or {})
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sized)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINTs; let SQLAlchemy emit BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if ":memory:" not in url:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        # A write transaction takes the write lock up front (IMMEDIATE), so a read-then-write waits
        # for the runner's commit (busy timeout) instead of failing with "database is locked". A read
        # transaction takes none: under WAL it reads its snapshot while writers commit.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class Database:
    """Owns the engine and the session factory of one process."""

    def __init__(self, url: str, queue: JobQueue | None = None, pool: dict[str, Any] | None = None) -> None:
        self.url = url
        self.engine = create_db_engine(url, pool)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.queue = queue

    @classmethod
    def of(cls, settings: "Settings", queue: JobQueue | None = None) -> "Database":
        """The database the settings name, pooled as they say."""
        return cls(settings.resolved_database_url, queue, pool_options(settings))

    def new_session(self, write: bool = True) -> Session:
        """A session; ``write=False`` for one that only reads (it never holds SQLite's write lock)."""
        session = self.sessionmaker(execution_options={} if write else {READ_ONLY: True})
        session.info[_QUEUE] = self.queue
        return session

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Session]:
        """A session that commits on success and rolls back on error; ``write=False`` for reads only."""
        session = self.new_session(write)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def enqueue_after_commit(session: Session, task_name: str, object_id: str) -> None:
    """Send ``object_id`` to the queue once this session's transaction commits, never before."""
    session.info.setdefault(_PENDING, []).append(("enqueue", task_name, object_id))


def revoke_after_commit(session: Session, task_name: str, object_id: str) -> None:
    """Withdraw ``object_id``'s queued message once this session's transaction (the cancel) commits."""
    session.info.setdefault(_PENDING, []).append(("revoke", task_name, object_id))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    queue = session.info.get(_QUEUE)
    if queue is None:
        return
    for action, task_name, object_id in pending:
        getattr(queue, action)(task_name, object_id)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
