"""Keyset (cursor) pagination over a monotonically increasing id column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Sequence, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import InvalidInput

T = TypeVar("T")

# Integer keys are 32-bit signed (Integer columns on Postgres); a larger cursor names no row and would be
# refused by the driver as out of range.
MAX_INT_KEY = 2**31 - 1


@dataclass
class Page(Generic[T]):
    data: Sequence[T]
    next_cursor: str | None


def paginate(
    session: Session,
    stmt: Select[Any],
    key: InstrumentedAttribute[Any],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool,
) -> Page[Any]:
    """One page of ``stmt`` ordered by ``key``; the cursor is the last key seen."""
    if cursor is not None:
        value: Any = cursor
        if key.type.python_type is int:
            # The length first: int() refuses over 4300 digits, and SQLite overflows past 64 bits.
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 10 or int(cursor) > MAX_INT_KEY:
                raise InvalidInput(f"cursor '{cursor[:40]}' is not a next_cursor this list returned")
            value = int(cursor)
        stmt = stmt.where(key < value if newest_first else key > value)
    stmt = stmt.order_by(key.desc() if newest_first else key.asc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = str(getattr(rows[-1], key.key)) if more and rows else None
    return Page(rows, next_cursor)
