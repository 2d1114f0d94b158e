"""Repetition loops: the longest run of one word or phrase repeated back to back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

# Loops of longer phrases exist, but runs of up to four words catch what sampling degenerates into
# ("the the the", "and then and then and then") at a cost linear in the text.
MAX_PHRASE_WORDS = 4


@dataclass(frozen=True)
class RepeatRun:
    """``phrase`` said ``count`` times in a row (count 1: nothing repeats)."""

    count: int
    phrase: tuple[str, ...]


def longest_repeat(tokens: Sequence[str], max_phrase: int = MAX_PHRASE_WORDS) -> RepeatRun:
    """The phrase of 1..max_phrase words repeated most times back to back; the shortest phrase wins ties."""
    best = RepeatRun(1, tuple(tokens[:1]))
    n = len(tokens)
    for size in range(1, max_phrase + 1):
        start = 0
        while start + 2 * size <= n:
            phrase = tuple(tokens[start : start + size])
            count = 1
            while tuple(tokens[start + count * size : start + (count + 1) * size]) == phrase:
                count += 1
            if count > best.count:
                best = RepeatRun(count, phrase)
            # Inside a run, later starts of the same phrase only find shorter runs.
            start += size * (count - 1) if count > 1 else 1
    return best


def repeat_limit(texts_tokens: Iterable[Sequence[str]]) -> int:
    """The most times any word or phrase repeats back to back in the given texts (1 when none repeats)."""
    return max((longest_repeat(tokens).count for tokens in texts_tokens), default=1)
