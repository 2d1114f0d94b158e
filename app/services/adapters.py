"""Adapters registered by successful fine-tunes, and their downloadable archives."""

from __future__ import annotations

import os
import tarfile
import zlib
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
    """The adapter directory as a gzipped tar whose top folder is the adapter id. Checked eagerly (a
    missing directory is a 404 before any byte is sent); the files are then read and compressed chunk
    by chunk as the client takes them."""
    if adapter.kind == "openai":
        raise JobStateError(f"adapter '{adapter.id}' is the OpenAI model {adapter.remote_model}: it has no files; "
                            "sample from it with POST /generate")
    directory = Path(adapter.path)
    if not (directory / "adapter_config.json").is_file():
        raise NotFound(f"adapter '{adapter.id}' has no files on this server")
    files = [path for path in sorted(directory.iterdir()) if path.is_file()]
    return _tar_gz([(f"{adapter.id}/{path.name}", path) for path in files])


def _tar_gz(members: list[tuple[str, Path]]) -> Iterator[bytes]:
    """A gzipped tar of (name in the archive, file) members, made as it is read: memory stays at one
    chunk whatever the size of the files."""
    gzip = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for raw in _tar(members):
        if data := gzip.compress(raw):
            yield data
    yield gzip.flush()


def _tar(members: list[tuple[str, Path]]) -> Iterator[bytes]:
    offset = 0
    for name, path in members:
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
            header = info.tobuf(tarfile.PAX_FORMAT)
            yield header
            left = info.size
            while left:
                chunk = file.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{path.name} became shorter while it was being sent")
                left -= len(chunk)
                yield chunk
        padding = bytes(-info.size % tarfile.BLOCKSIZE)
        yield padding
        offset += len(header) + info.size + len(padding)
    # Two zero blocks end the archive, padded to a whole record as tar writers do.
    end = 2 * tarfile.BLOCKSIZE
    yield bytes(end + -(offset + end) % tarfile.RECORDSIZE)
