"""Token counts under a base model's tokenizer, without torch: dataset stats and training-example lengths.

The light ``tokenizers`` package reads the tokenizer.json that model preparation writes, and
``ChatFormat`` renders prompts exactly as the trainer does, so an example's length here is its
length in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from app.domain.base_models import UnknownBaseModel, resolve_base_model
from app.domain.chat_format import ChatFormat, special_tokens_of
from app.errors import UnknownModel
from app.settings import Settings


@dataclass(frozen=True)
class ModelTokenizer:
    """A base model's tokenizer and chat format, as the trainer sees them; ``text_tokenizer`` is the
    same tokenizer reading special-token text ("<|im_end|>") as ordinary text, as transcripts are."""

    tokenizer: Any
    chat: ChatFormat
    text_tokenizer: Any

    def count(self, text: str) -> int:
        """Tokens of plain text (no special tokens added, none read from the text)."""
        return len(self.text_tokenizer.encode(text, add_special_tokens=False).ids)

    def example_length(self, messages: Sequence[dict[str, str]]) -> int:
        """Tokens of a training example: rendered prompt + transcript + end token."""
        prompt = self.chat.render(messages[:-1])
        transcript = messages[-1]["content"]
        self.chat.completion(transcript)  # refuses a tokenizer without an eos token, as training does
        prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=self.chat.adds_special_tokens).ids
        # worker.prompt_format.encode_completion: the transcript spelt out, then the one eos id.
        return len(prompt_ids) + self.count(transcript) + 1


def model_dir(settings: Settings, base_model: str) -> Path:
    """Where a base model's files are (or will be, for a bundled GGUF not yet converted)."""
    try:
        ref = resolve_base_model(base_model, settings.base_model_roots)
    except UnknownBaseModel as exc:
        raise UnknownModel(str(exc)) from exc
    # A bundled GGUF is readable only once converted into the cache; other kinds are directories.
    return settings.resolved_cache_dir / "models" / ref.name if ref.kind == "gguf_package" else Path(ref.location)


def model_tokenizer(settings: Settings, base_model: str) -> ModelTokenizer | None:
    """The base model's tokenizer when it is prepared on this server, else None."""
    directory = model_dir(settings, base_model)
    return load_model_tokenizer(directory) if (directory / "tokenizer.json").is_file() else None


def counter(settings: Settings, base_model: str) -> Callable[[str], int] | None:
    """A token counter when the model is prepared in the cache, else None (stats skipped)."""
    tokenizer = model_tokenizer(settings, base_model)
    return tokenizer.count if tokenizer is not None else None


@lru_cache(maxsize=4)
def load_model_tokenizer(directory: Path) -> ModelTokenizer:
    """Read tokenizer.json, tokenizer_config.json and the chat template of a model directory."""
    from tokenizers import Tokenizer

    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template_path = directory / "chat_template.jinja"
    template = template_path.read_text() if template_path.is_file() else config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one renders chats
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    specials = special_tokens_of(config)
    chat = ChatFormat(template=template or None, eos_token=specials.get("eos_token"), special_tokens=specials)
    path = str(directory / "tokenizer.json")
    text_tokenizer = Tokenizer.from_file(path)
    text_tokenizer.encode_special_tokens = True
    return ModelTokenizer(Tokenizer.from_file(path), chat, text_tokenizer)
