"""Process logging: plain text or one JSON object per line, each record carrying the job it belongs to.

``job_context(job_id=..., task=...)`` binds fields to the current context (contextvars: the current
thread or asyncio task); every record logged inside it carries them, whichever logger emits it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from app.settings import Settings

_FIELDS: ContextVar[dict[str, Any]] = ContextVar("synthaug_log_fields", default={})
# Attributes every LogRecord has; anything else on a record came from ``extra=`` or job_context.
# (uvicorn adds color_message, a copy of the message with terminal colours.)
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that install their own handlers; with configure_logging their records go to the root's.
_PROPAGATED = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task")


@contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (job_id, task, attempt, ...) to every record logged inside the block; nests.

    A field given as None is left out, so callers can pass an optional id as it is.
    """
    token = _FIELDS.set({**_FIELDS.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def context_fields() -> dict[str, Any]:
    """The fields job_context has bound here."""
    return dict(_FIELDS.get())


class _ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (a record's own ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the context fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in _extra_fields(record).items() if k not in entry})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual one-line text, the context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = _extra_fields(record)
        line = super().formatMessage(record)
        return line + "".join(f" {k}={v}" for k, v in fields.items()) if fields else line


class _Handler(logging.StreamHandler):
    """The handler configure_logging installs, recognised (and replaced) when called again."""


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Send every logger's records to ``stream`` (stderr) in ``settings.log_format`` at ``settings.log_level``.

    Idempotent: a second call replaces the handler the first one installed.
    """
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in _PROPAGATED:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.NOTSET)  # the root's level decides (uvicorn's own config may have set one)
        library.disabled = False
