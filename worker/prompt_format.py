"""The one place chat messages become model text and tokens, for training and sampling alike.

Models with a chat template use it. Models without one get a plain-text fallback::

    ### System:
    <system content>

    ### User:
    <user content>

    ### Assistant:
    <completion><eos>

Either way the completion ends with the tokenizer's eos token, which is what the sampler stops on.
"""

from __future__ import annotations

from typing import Any, Sequence

FALLBACK_HEADERS = {"system": "### System:", "user": "### User:", "assistant": "### Assistant:"}


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer brings its own chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
) -> str:
    """Messages as prompt text: the chat template if any, else the plain-text fallback."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    turns = [f"{_fallback_header(m['role'])}\n{m['content']}\n\n" for m in messages]
    if add_generation_prompt:
        turns.append(f"{FALLBACK_HEADERS['assistant']}\n")
    return "".join(turns)


def completion_text(tokenizer: Any, transcript: str) -> str:
    """The training target: the transcript followed by the end marker the sampler stops on."""
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos token to end completions with")
    return transcript + tokenizer.eos_token


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, identical for training and sampling."""
    # A chat template writes its own special tokens (a BOS among them, for some models); adding
    # them again would double them. Plain-text prompts get the tokenizer's usual BOS handling.
    return tokenizer(prompt, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]


def encode_completion(tokenizer: Any, completion: str) -> list[int]:
    """Token ids of a completion, tokenized on its own as the sampler generates it after the prompt."""
    return tokenizer(completion, add_special_tokens=False)["input_ids"]


def _fallback_header(role: str) -> str:
    try:
        return FALLBACK_HEADERS[role]
    except KeyError:
        raise ValueError(f"unknown chat role '{role}' (expected one of {', '.join(FALLBACK_HEADERS)})")
