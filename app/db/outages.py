"""Which database errors mean "the database is unavailable" (503, retry) rather than a bug (500)."""

from __future__ import annotations

from sqlalchemy import exc


def outage_reason(error: BaseException) -> str | None:
    """A short reason when ``error`` is a connection-level failure, else None.

    Connection refused, a server shutting down, a dropped connection and an exhausted pool are
    outages; an IntegrityError or a programming error is not, unless the driver reports that the
    connection itself was lost.
    """
    if isinstance(error, exc.TimeoutError):
        return "no free connection in the pool"
    if isinstance(error, (exc.OperationalError, exc.InterfaceError)) or (
        isinstance(error, exc.DBAPIError) and error.connection_invalidated
    ):
        # The driver's class names the failure (OperationalError, AdminShutdown, ...) without the
        # host, port or user that its message carries.
        return type(error.orig).__name__ if error.orig is not None else type(error).__name__
    return None
