"""Adapters registered by successful fine-tunes, and their downloadable archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Iterator

from sqlalchemy.orm import Session

from app.db import repositories as repo
from app.db.models import Adapter
from app.db.pagination import Page
from app.errors import JobStateError, NotFound

_CHUNK = 64 * 1024


def get(session: Session, tenant_id: str, adapter_id: str) -> Adapter:
    adapter = repo.get_owned(session, Adapter, tenant_id, adapter_id)
    if adapter is None:
        raise NotFound(f"adapter '{adapter_id}' not found")
    return adapter


def list_for(session: Session, tenant_id: str, *, limit: int, cursor: str | None) -> Page[Adapter]:
    return repo.list_owned(session, Adapter, tenant_id, limit=limit, cursor=cursor)


def archive(adapter: Adapter) -> Iterator[bytes]:
    """The adapter directory as a gzipped tar whose top folder is the adapter id (built eagerly,
    so a missing directory is a 404 before any byte is sent)."""
    if adapter.kind == "openai":
        raise JobStateError(f"adapter '{adapter.id}' is the OpenAI model {adapter.remote_model}: it has no files; "
                            "sample from it with POST /generate")
    directory = Path(adapter.path)
    if not (directory / "adapter_config.json").is_file():
        raise NotFound(f"adapter '{adapter.id}' has no files on this server (looked in {directory})")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                tar.add(path, arcname=f"{adapter.id}/{path.name}")
    data = buffer.getvalue()
    return (data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK))
