"""Writing training artifacts to disk: an adapter appears whole or not at all, and a full disk is
reported as such rather than as whatever the writing library raised."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator

# Errors of a volume that cannot take more bytes: no space, a quota, a file-size limit.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# How safetensors says it (Rust's io::Error, not an OSError).
_FULL_WORDS = ("no space left on device", "disk quota exceeded", "file too large")
# torch.save's writer does not say why a write failed ("unexpected pos 576 vs 534"); a write that
# failed for want of space leaves the volume all but full, which tells.
_NEARLY_FULL_BYTES = 1024 * 1024


class DiskFull(OSError):
    """The artifact volume ran out of space (or quota) while the job wrote to it."""


def is_disk_full(exc: BaseException, directory: Path) -> bool:
    """True when ``exc``, or an exception it was raised from, says the volume is full, or when the
    volume of ``directory`` has (almost) no space left after it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if any(words in str(current).lower() for words in _FULL_WORDS):
            return True
        current = current.__cause__ or current.__context__
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    return shutil.disk_usage(existing).free < _NEARLY_FULL_BYTES


@contextmanager
def reporting_disk_full(writing: str, directory: Path) -> Iterator[None]:
    """Turn a full-disk failure inside the block, which writes under ``directory``, into DiskFull
    naming what was being written."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc, Path(directory)):
            raise
        raise DiskFull(
            f"no space left on the artifact volume while writing {writing}; free space there "
            f"(or raise the quota) and submit the job again",
        ) from None


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A fresh sibling directory to write into, renamed to ``target`` when the block succeeds and
    removed when it fails, so ``target`` is never half-written (a full disk, a crash mid-save)."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # a previous attempt's leftovers
    try:
        staging.mkdir(parents=True)
        yield staging
        shutil.rmtree(target, ignore_errors=True)  # a previous attempt's adapter, replaced whole
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def removing_unfinished_checkpoints(checkpoints_dir: Path, finished: Callable[[], Collection[Path]]) -> Iterator[None]:
    """When the block fails, remove the checkpoint directories it began but did not finish: those that
    appeared during the block and are not in ``finished()`` (the trainer reports a checkpoint once it is
    whole). A full disk otherwise keeps the half-written one, and with it the space a retry needs.
    Checkpoints that were there before the block (a resumed job's) are never touched."""
    before = _checkpoint_dirs(checkpoints_dir)
    try:
        yield
    except BaseException:
        whole = {Path(path).resolve() for path in finished()}
        for path in _checkpoint_dirs(checkpoints_dir) - before - whole:
            shutil.rmtree(path, ignore_errors=True)
        raise


def _checkpoint_dirs(checkpoints_dir: Path) -> set[Path]:
    return {path.resolve() for path in checkpoints_dir.glob("checkpoint-*") if path.is_dir()}
