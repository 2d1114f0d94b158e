"""The fake OpenAI API's chat completions: checks like the API's, and an invented speech transcript
that depends only on (model, seed, messages). One word is one token."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Callable

from tests.fakes.openai_errors import api_error

FILLERS = ("um", "uh", "well", "you know", "I mean", "so", "oh")
CLAUSES = (
    "the boy is up on the stool", "he's reaching for the cookie jar", "the stool is tipping over",
    "the mother is washing the dishes", "the water is running over the sink", "she's drying a plate",
    "the girl wants a cookie too", "there's a window with curtains", "the cupboard door is open",
    "it's a kitchen I think", "the little girl is laughing", "there are cups on the counter",
    "he's gonna fall down", "the mother doesn't see it", "outside there's a garden and a path",
    "what else is there", "the floor is getting all wet", "I can't remember the word for it",
)


def invented_transcript(model: str, seed: int | None, messages: list[dict]) -> str:
    """A short picture-description transcript with fillers, at least 12 words, ending on its own."""
    digest = hashlib.sha256(json.dumps([model, seed, messages], sort_keys=True).encode()).digest()
    rng = random.Random(digest)
    words: list[str] = []
    while len(words) < 12 or rng.random() < 0.5:
        if rng.random() < 0.6:
            words += rng.choice(FILLERS).split()
        words += rng.choice(CLAUSES).split()
        if rng.random() < 0.3:
            words.append("and")
    if words[-1] == "and":
        words.pop()
    return " ".join(words) + "."


def chat_completion(body: Any, served: bool, text_of: Callable | None, finish_reason: str | None,
                    completion_id: str, created: int) -> dict:
    """The ChatCompletion the API answers to ``body``; ``served``: whether its model may be used."""
    if not isinstance(body, dict):
        raise api_error(400, "We could not parse the JSON body of your request.")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise api_error(400, "you must provide a model parameter", param="model")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise api_error(400, "Invalid 'messages': expected a non-empty array of messages with a role.",
                        param="messages")
    _check_sampling(body)
    if not served:
        raise api_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                        code="model_not_found")
    seed = body.get("seed")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    choices, completion_tokens = [], 0
    for index in range(body.get("n") or 1):
        choice_seed = None if seed is None else seed + index
        text = (text_of or invented_transcript)(model, choice_seed, messages)
        reason = "stop"
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        words = text.split()
        if limit is not None and len(words) > limit:
            text, reason = " ".join(words[:limit]), "length"
        completion_tokens += len(text.split())
        choices.append({"index": index, "message": {"role": "assistant", "content": text, "refusal": None,
                                                    "annotations": []},
                        "logprobs": None, "finish_reason": finish_reason or reason})
    prompt_tokens = sum(len(str(m.get("content", "")).split()) + 3 for m in messages) + 3
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model, "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default",
        "system_fingerprint": "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10],
    }


def _check_sampling(body: dict) -> None:
    """The API's range checks on the sampling fields."""
    ranges = {"temperature": (0, 2), "top_p": (0, 1), "n": (1, 128), "max_completion_tokens": (1, None),
              "max_tokens": (1, None), "frequency_penalty": (-2, 2), "presence_penalty": (-2, 2)}
    for name, (low, high) in ranges.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low or (
                high is not None and value > high):
            raise api_error(400, f"Invalid '{name}': {value!r} is out of range.", param=name, code="invalid_value")
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        raise api_error(400, f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got "
                             f"an array with length {len(stop)} instead.", param="stop", code="array_above_max_length")
