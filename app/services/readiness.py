"""Whether this API process can serve requests: its database answers and, when configured, its broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from app import broker
from app.db.session import Database
from app.settings import Settings

logger = logging.getLogger(__name__)

OK = "ok"
NOT_CONFIGURED = "not configured"


@dataclass
class Readiness:
    """Each check's outcome (``ok``, ``not configured`` or ``failed: <reason>``) and the failures in words."""

    checks: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    def fail(self, check: str, problem: str, error: BaseException) -> None:
        reason = type(error).__name__
        self.checks[check] = f"failed: {reason}"
        self.problems.append(f"{problem}: {reason}")
        # No traceback: probes repeat every few seconds for as long as an outage lasts.
        logger.warning("readiness check %s failed: %s: %s", check, problem, error)


def check(db: Database, settings: Settings) -> Readiness:
    """Run every check; none stops the others."""
    readiness = Readiness()
    try:
        ping_database(db)
        readiness.checks["database"] = OK
    except Exception as error:
        readiness.fail("database", "database not reachable", error)
    if settings.broker_url:
        try:
            broker.ping(settings.broker_url, settings.broker_timeout_s)
            readiness.checks["broker"] = OK
        except Exception as error:
            readiness.fail("broker", f"broker not reachable at {broker.masked_url(settings.broker_url)}", error)
    else:
        readiness.checks["broker"] = NOT_CONFIGURED
    return readiness


def ping_database(db: Database) -> None:
    """``SELECT 1`` on a pooled connection, outside any transaction (no SQLite write lock)."""
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchone()
        cursor.close()
    finally:
        connection.close()
