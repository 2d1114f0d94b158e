"""Chat messages to model text and tokens with a loaded tokenizer, for training and sampling alike.

Rendering itself is ``app.domain.chat_format.ChatFormat`` (the API counts tokens with it too); this
module binds it to a transformers tokenizer. Either way the completion ends with the tokenizer's eos
token, which is what the samplers stop on.
"""

from __future__ import annotations

from typing import Any, Sequence

from app.domain.chat_format import FALLBACK_HEADERS, ChatFormat

__all__ = ["FALLBACK_HEADERS", "chat_format", "completion_text", "encode_completion", "encode_prompt",
           "has_chat_template", "render_prompt"]


def chat_format(tokenizer: Any) -> ChatFormat:
    """The tokenizer's chat template (if any), eos token and special tokens."""
    return ChatFormat(
        template=getattr(tokenizer, "chat_template", None) or None,
        eos_token=tokenizer.eos_token,
        special_tokens={k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)},
    )


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer brings its own chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True
) -> str:
    """Messages as prompt text: the chat template if any, else the plain-text fallback."""
    return chat_format(tokenizer).render(messages, add_generation_prompt=add_generation_prompt)


def completion_text(tokenizer: Any, transcript: str) -> str:
    """The training target: the transcript followed by the end marker the sampler stops on."""
    return chat_format(tokenizer).completion(transcript)


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, identical for training and sampling."""
    return tokenizer(prompt, add_special_tokens=chat_format(tokenizer).adds_special_tokens)["input_ids"]


def encode_completion(tokenizer: Any, completion: str) -> list[int]:
    """Token ids of a completion, tokenized on its own as the sampler generates it after the prompt.

    Only the closing eos is a special token: a transcript that holds the text of one ("<|im_end|>") is
    spelt out in ordinary tokens, or training would learn to stop there and decoding would drop it.
    """
    eos = tokenizer.eos_token
    closed = bool(eos) and completion.endswith(eos)
    transcript = completion[: -len(eos)] if closed else completion
    ids = tokenizer(transcript, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [*ids, tokenizer.eos_token_id] if closed else ids
