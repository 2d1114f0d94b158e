"""The one place chat messages become model text, for training, sampling and token counts alike.

Models with a chat template get it rendered the way transformers' ``apply_chat_template`` renders it
(a sandboxed Jinja environment with trim_blocks, lstrip_blocks, loop controls, ``tojson``,
``raise_exception``, ``strftime_now`` and the tokenizer's special tokens); a test holds the two equal
for the bundled model. Models without one get a plain-text fallback::

    ### System:
    <system content>

    ### User:
    <user content>

    ### Assistant:
    <completion><eos>

It lives here, not beside the model code, so the API can count an example's tokens (with the light
``tokenizers`` package) before a job is queued, exactly as the trainer will.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

FALLBACK_HEADERS = {"system": "### System:", "user": "### User:", "assistant": "### Assistant:"}


@dataclass(frozen=True)
class ChatFormat:
    """A chat template (or None for the fallback) and the special tokens the template may use."""

    template: str | None
    eos_token: str | None
    special_tokens: Mapping[str, str] = field(default_factory=dict)

    def render(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Messages as prompt text."""
        if self.template:
            return _compile(self.template).render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                tools=None, documents=None, **self.special_tokens,
            )
        turns = [f"{_fallback_header(m['role'])}\n{m['content']}\n\n" for m in messages]
        if add_generation_prompt:
            turns.append(f"{FALLBACK_HEADERS['assistant']}\n")
        return "".join(turns)

    def completion(self, transcript: str) -> str:
        """The training target: the transcript followed by the end marker the sampler stops on."""
        if self.eos_token is None:
            raise ValueError("the tokenizer has no eos token to end completions with")
        return transcript + self.eos_token

    @property
    def adds_special_tokens(self) -> bool:
        """Whether prompt text is tokenized with the tokenizer's special tokens added.

        A chat template writes its own (a BOS among them, for some models); adding them again would
        double them. Plain-text prompts get the tokenizer's usual BOS handling.
        """
        return not self.template


def special_tokens_of(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``*_token`` strings of a tokenizer_config.json (values may be strings or AddedToken dicts)."""
    tokens = {}
    for key, value in config.items():
        if key.endswith("_token") and value is not None:
            tokens[key] = value["content"] if isinstance(value, dict) else str(value)
    return tokens


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _fallback_header(role: str) -> str:
    try:
        return FALLBACK_HEADERS[role]
    except KeyError:
        raise ValueError(f"unknown chat role '{role}' (expected one of {', '.join(FALLBACK_HEADERS)})")
