"""Keeping the server's directories out of what tenants read (job errors, event messages)."""

from __future__ import annotations

import sys
from pathlib import Path

from app.settings import Settings


def hide_server_paths(text: str, settings: Settings) -> str:
    """``text`` with each server directory replaced by a placeholder such as ``<artifacts>``."""
    placeholders = {
        settings.resolved_artifact_dir: "<artifacts>",
        settings.resolved_cache_dir: "<cache>",
        settings.resolved_models_dir: "<models>",
        settings.data_dir.resolve(): "<data>",
        Path(sys.prefix).resolve(): "<python>",
        Path.home(): "~",
    }
    # Longest first, so an artifact dir inside the data dir is named as such.
    for root in sorted(placeholders, key=lambda p: len(str(p)), reverse=True):
        if len(root.parts) > 1:  # never "/" itself
            text = text.replace(str(root), placeholders[root])
    return text


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """A job's error as stored and shown: the exception's type and message, without server paths."""
    return hide_server_paths(f"{type(exc).__name__}: {exc}", settings)
