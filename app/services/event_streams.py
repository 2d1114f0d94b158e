"""Server-sent event streams of a fine-tune job's events: read from the table, kept alive, bounded.

A waiting stream holds no thread and no transaction: each poll is one short read transaction on a
threadpool thread and the waits between polls are async sleeps. A client that left ends the stream
before the next poll; the response also cancels it at its next await when the server reports the
disconnect, or when a write (a keep-alive at the latest) fails.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from anyio import to_thread

from app.db import repositories as repo
from app.db.models import TERMINAL_STATUSES
from app.db.session import Database
from app.metrics import EVENT_STREAMS_OPEN
from app.services import finetune_jobs

KEEP_ALIVE = ": keep-alive\n\n"
BATCH = 500


@dataclass(frozen=True)
class StreamLimits:
    """How often a stream polls, how long it stays silent before a keep-alive, and how long it lives."""

    poll_s: float
    keepalive_s: float
    max_s: float


@dataclass
class _Poll:
    frames: list[str]
    last_id: int
    status: str


def _poll(db: Database, tenant_id: str, job_id: str, after: int) -> _Poll:
    with db.transaction(write=False) as session:
        status = finetune_jobs.get(session, tenant_id, job_id).status
        # Read after the status: an event committed with the final status is never missed.
        events = repo.events_after(session, job_id, after, BATCH)
        frames = [_frame(event.id, event.kind, {
            "id": event.id, "kind": event.kind, "message": event.message, "data": event.data,
            "created_at": event.created_at.isoformat(),
        }) for event in events]
    return _Poll(frames, events[-1].id if events else after, status)


def _frame(event_id: int | None, kind: str, body: dict[str, Any]) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(body)}\n\n"


async def job_events(
    db: Database, tenant_id: str, job_id: str, after: int, limits: StreamLimits,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The job's events after ``after`` until it has ended (an ``end`` event), the client leaves, or
    ``limits.max_s`` passes (a ``reconnect`` event naming the id to resume after)."""
    EVENT_STREAMS_OPEN.inc()
    try:
        started = last_sent = time.monotonic()
        while not await is_disconnected():
            poll = await to_thread.run_sync(_poll, db, tenant_id, job_id, after)
            for frame in poll.frames:
                yield frame
            after, now = poll.last_id, time.monotonic()
            if not poll.frames and poll.status in TERMINAL_STATUSES:
                yield _frame(None, "end", {"status": poll.status})
                return
            if now - started >= limits.max_s:
                yield _frame(None, "reconnect", {
                    "after": after, "detail": f"streams end after {limits.max_s:g} s; reconnect with "
                    f"Last-Event-ID: {after} (or ?after={after}) to continue"})
                return
            if poll.frames:
                last_sent = now
                continue  # more may be waiting: read on without a pause
            if now - last_sent >= limits.keepalive_s:
                yield KEEP_ALIVE
                last_sent = now
            await anyio.sleep(limits.poll_s)
    finally:
        EVENT_STREAMS_OPEN.dec()
