"""Token counts under a base model's tokenizer, for the dataset report."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from app.settings import Settings


def counter(settings: Settings, base_model: str) -> Callable[[str], int] | None:
    """A token counter when the model's tokenizer is prepared locally, else None (stats skipped)."""
    path = settings.resolved_cache_dir / "models" / base_model / "tokenizer.json"
    if not path.is_file():
        local = Path(base_model) / "tokenizer.json"
        path = local if local.is_file() else path
    if not path.is_file():
        return None
    tokenizer = _load(str(path))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=4)
def _load(path: str):
    # `tokenizers` is light (no torch); it reads the tokenizer.json that model preparation writes.
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)
