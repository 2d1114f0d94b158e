"""Token counts under a base model's tokenizer, for the dataset report."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from app.domain.base_models import UnknownBaseModel, resolve_base_model
from app.errors import UnknownModel
from app.settings import Settings


def counter(settings: Settings, base_model: str) -> Callable[[str], int] | None:
    """A token counter when the model is prepared in the cache, else None (stats skipped)."""
    try:
        ref = resolve_base_model(base_model)
    except UnknownBaseModel as exc:
        raise UnknownModel(str(exc)) from exc
    # A bundled GGUF is readable only once converted into the cache; other kinds are directories.
    model_dir = settings.resolved_cache_dir / "models" / ref.name if ref.kind == "gguf_package" else Path(ref.location)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = _load(str(path))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=4)
def _load(path: str):
    # `tokenizers` is light (no torch); it reads the tokenizer.json that model preparation writes.
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)
