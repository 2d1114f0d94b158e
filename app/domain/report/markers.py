"""Linguistic markers of one transcript from the dementia-speech literature, and their summary over a set.

Words are the tokens of ``app.domain.markers.tokenize`` with fillers included, so word counts and rates
per 100 words agree with the rest of the service. Lexical richness (type-token ratio, MATTR, Brunét's W,
Honoré's R) is measured on the words that are not fillers: a filled pause is no lexical choice, and its
rate is a marker of its own. A marker a text does not define is None and summaries leave it out: every
marker but ``words`` for a text without words, the lexical ones for a text of fillers only, and Honoré's
R when every word occurs once (its denominator 1 - V1/V is then 0).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Sequence

import numpy as np

from app.domain.markers import FILLERS, count_repetitions, tokenize

MATTR_WINDOW = 50
BRUNET_EXPONENT = -0.165
PHRASE_WORDS = (2, 3, 4)

# Personal, possessive and reflexive pronouns and their contractions (tokenize keeps "he's" whole).
# Demonstratives ("that") and indefinites ("something") are left out: the first double as determiners,
# the second are the vague words label_fidelity counts on their own.
PRONOUNS = frozenset({
    "i", "me", "my", "mine", "myself",
    "you", "your", "yours", "yourself", "yourselves",
    "he", "him", "his", "himself",
    "she", "her", "hers", "herself",
    "it", "its", "itself",
    "we", "us", "our", "ours", "ourselves",
    "they", "them", "their", "theirs", "themselves",
    "i'm", "i've", "i'd", "i'll",
    "you're", "you've", "you'd", "you'll",
    "he's", "he'd", "he'll", "she's", "she'd", "she'll", "it's", "it'd", "it'll",
    "we're", "we've", "we'd", "we'll", "they're", "they've", "they'd", "they'll",
})

# Like app.domain.markers: a lone ".", "!" or "?" ends an utterance and "..." is a pause inside one;
# a line break ends one too, since transcripts put one utterance on a line.
_UTTERANCE_END = re.compile(r"[!?\r\n]|(?<!\.)\.(?!\.)")


@dataclass(frozen=True)
class TextMarkers:
    """The markers of one transcript; rates are per 100 words."""

    words: int
    fillers_per_100_words: float | None
    word_repetitions_per_100_words: float | None
    phrase_repetitions_per_100_words: float | None
    pronouns_per_100_words: float | None
    type_token_ratio: float | None
    mattr: float | None
    brunet_w: float | None
    honore_r: float | None
    mean_length_of_utterance: float | None


MARKER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TextMarkers))


@dataclass(frozen=True)
class MarkerSummary:
    """Distribution of one marker over the texts that define it (sd needs two, the rest one)."""

    n: int
    mean: float | None
    sd: float | None
    median: float | None
    q1: float | None
    q3: float | None


@dataclass(frozen=True)
class CorpusMarkers:
    """Per marker, its summary over a set of texts."""

    texts: int
    markers: dict[str, MarkerSummary]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_markers(text: str, window: int = MATTR_WINDOW) -> TextMarkers:
    """All markers of one transcript."""
    spoken = [(u, tokens) for u, tokens in ((u, tokenize(u)) for u in split_utterances(text)) if tokens]
    utterances = [tokens for _, tokens in spoken]
    words = [token for tokens in utterances for token in tokens]
    lexical = [token for token in words if token not in FILLERS]
    if not words:
        return TextMarkers(0, *([None] * (len(MARKER_NAMES) - 1)))
    per_100 = 100.0 / len(words)
    return TextMarkers(
        words=len(words),
        fillers_per_100_words=sum(w in FILLERS for w in words) * per_100,
        word_repetitions_per_100_words=sum(count_repetitions(u) for u, _ in spoken) * per_100,
        phrase_repetitions_per_100_words=sum(count_phrase_repetitions(t) for t in utterances) * per_100,
        pronouns_per_100_words=sum(w.replace("’", "'") in PRONOUNS for w in words) * per_100,
        type_token_ratio=type_token_ratio(lexical),
        mattr=moving_average_ttr(lexical, window),
        brunet_w=brunet_w(lexical),
        honore_r=honore_r(lexical),
        mean_length_of_utterance=len(words) / len(utterances),
    )


def split_utterances(text: str) -> list[str]:
    """Utterances of a transcript: split on ".", "!", "?" and line breaks, not on a "..." pause."""
    return [u for u in _UTTERANCE_END.split(text) if u.strip()]


def count_phrase_repetitions(tokens: Sequence[str]) -> int:
    """Phrases of 2-4 words said again right after themselves, each further copy counted once.

    "and then and then and then" counts 2. A phrase that is itself a repeat of a shorter one ("the the")
    is left to word repetitions, and one of fillers only is not counted, as with word repetitions.
    """
    count = start = 0
    while start < len(tokens):
        for size in PHRASE_WORDS:
            phrase = list(tokens[start : start + size])
            if (
                len(phrase) == size
                and list(tokens[start + size : start + 2 * size]) == phrase
                and _is_primitive(phrase)
                and not all(token in FILLERS for token in phrase)
            ):
                count += 1
                # The copy may itself be repeated: continue from it.
                start += size
                break
        else:
            start += 1
    return count


def type_token_ratio(tokens: Sequence[str]) -> float | None:
    """Distinct words over words."""
    return len(set(tokens)) / len(tokens) if tokens else None


def moving_average_ttr(tokens: Sequence[str], window: int = MATTR_WINDOW) -> float | None:
    """Mean type-token ratio of every ``window``-word stretch; plain TTR for a text shorter than the window."""
    if len(tokens) < window:
        return type_token_ratio(tokens)
    counts = Counter(tokens[:window])
    distinct_total = len(counts)
    for leaving, entering in zip(tokens, tokens[window:]):
        counts[entering] += 1
        counts[leaving] -= 1
        if not counts[leaving]:
            del counts[leaving]
        distinct_total += len(counts)
    return distinct_total / ((len(tokens) - window + 1) * window)


def brunet_w(tokens: Sequence[str]) -> float | None:
    """Brunét's W = N ** (V ** -0.165); lower is a richer vocabulary."""
    if not tokens:
        return None
    return len(tokens) ** (len(set(tokens)) ** BRUNET_EXPONENT)


def honore_r(tokens: Sequence[str]) -> float | None:
    """Honoré's R = 100 ln N / (1 - V1/V), V1 the words said once; None when every word is said once."""
    counts = Counter(tokens)
    hapaxes = sum(c == 1 for c in counts.values())
    if hapaxes == len(counts):
        return None
    return 100.0 * math.log(len(tokens)) / (1.0 - hapaxes / len(counts))


def marker_values(measured: Iterable[TextMarkers], marker: str) -> list[float]:
    """The values of one marker over the texts that define it."""
    values = (getattr(m, marker) for m in measured)
    return [float(v) for v in values if v is not None]


def summarise_markers(measured: Sequence[TextMarkers]) -> CorpusMarkers:
    """Mean, sample sd, median and quartiles (linear interpolation) of each marker."""
    return CorpusMarkers(
        texts=len(measured),
        markers={name: _summarise(marker_values(measured, name)) for name in MARKER_NAMES},
    )


def _summarise(values: list[float]) -> MarkerSummary:
    if not values:
        return MarkerSummary(0, None, None, None, None, None)
    q1, median, q3 = (float(q) for q in np.percentile(values, [25, 50, 75]))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return MarkerSummary(len(values), float(np.mean(values)), sd, median, q1, q3)


def _is_primitive(phrase: list[str]) -> bool:
    size = len(phrase)
    return all(phrase != phrase[:unit] * (size // unit) for unit in range(1, size) if size % unit == 0)
