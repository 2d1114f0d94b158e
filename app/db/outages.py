"""Which database errors mean "the database is unavailable" (503, retry) rather than a bug (500)."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from sqlalchemy import exc

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a client is told to wait when the database is down; a restart takes about this long.
RETRY_AFTER_S = 5


def outage_reason(error: BaseException) -> str | None:
    """A short reason when ``error`` is a connection-level failure, else None.

    Connection refused, a server shutting down, a dropped connection and an exhausted pool are
    outages; an IntegrityError or a programming error is not, unless the driver reports that the
    connection itself was lost.
    """
    if isinstance(error, exc.TimeoutError):
        return "no free connection in the pool"
    if isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig):
        return "database is locked"  # SQLite: another writer held the lock past the busy timeout
    if isinstance(error, (exc.OperationalError, exc.InterfaceError)) or (
        isinstance(error, exc.DBAPIError) and error.connection_invalidated
    ):
        # The driver's class names the failure (OperationalError, AdminShutdown, ...) without the
        # host, port or user that its message carries.
        return type(error.orig).__name__ if error.orig is not None else type(error).__name__
    return None


def unavailable_body(reason: str) -> dict[str, str]:
    """The 503 body of an outage; send it with ``Retry-After: RETRY_AFTER_S``."""
    return {"error": "ServiceUnavailable", "detail": f"the database is unavailable: {reason}; retry shortly"}


def retry_outages(write: Callable[[], T], *, attempts: int = 5, first_wait_s: float = 0.5) -> T:
    """``write()``, run again (the wait doubling from ``first_wait_s``) while it fails on an outage or
    a SQLite lock; the last failure is raised. ``write`` must open its own transaction."""
    for attempt in range(1, attempts):
        try:
            return write()
        except exc.SQLAlchemyError as error:
            reason = outage_reason(error)
            if reason is None:
                raise
            wait = first_wait_s * 2 ** (attempt - 1)
            log.warning("database write failed (%s), attempt %d of %d; retrying in %.1f s", reason, attempt, attempts, wait)
            time.sleep(wait)
    return write()
