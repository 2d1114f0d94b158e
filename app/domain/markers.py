"""Linguistic markers of impaired speech: word counts, filled pauses, immediate repetitions."""

import re
from collections.abc import Iterable

# Plain filled pauses, with the elongated spellings transcribers use; CHAT marks fillers
# as "&-uh" (older transcripts "&uh"), which normalise_token maps onto these.
FILLERS = frozenset({"uh", "uhh", "um", "umm", "uhm", "er", "erm", "ah", "hmm", "hm", "mm", "mhm"})

# The CHAT "&" / "&-" prefix is matched so "&-uh" stays one token; normalise_token drops it.
_TOKEN = re.compile(r"&-?[^\W\d_]+|[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_END = re.compile(r"[!?]|(?<!\.)\.(?!\.)")


def tokenize(text: str) -> list[str]:
    """Split a transcript into lower-cased word tokens, dropping punctuation and pauses."""
    return [normalise_token(token) for token in _TOKEN.findall(text.lower())]


def normalise_token(token: str) -> str:
    """Strip the CHAT filler/fragment prefix so "&-uh" and "&uh" read as "uh"."""
    return token.lstrip("&-")


def count_words(text: str) -> int:
    """Number of word tokens, fillers included."""
    return len(tokenize(text))


def count_fillers(text: str) -> int:
    """Number of filled pauses."""
    return sum(token in FILLERS for token in tokenize(text))


def fillers_per_100_words(text: str) -> float:
    """Filled pauses per 100 words; 0.0 for a text without words."""
    return filler_rate([text])


def filler_rate(texts: Iterable[str]) -> float:
    """Filled pauses per 100 words over all texts together; 0.0 when there are no words."""
    return summarise(texts)["fillers_per_100_words"]


def count_repetitions(text: str) -> int:
    """Words that repeat the word before them within a sentence ("the the", "the... the").

    A lone ".", "!" or "?" ends a sentence, so "at all. All in all" is no repetition; "..." is a
    pause inside one. Repeated fillers are not counted: they are fillers already.
    """
    repetitions = 0
    for sentence in _SENTENCE_END.split(text):
        tokens = tokenize(sentence)
        repetitions += sum(
            current == previous and current not in FILLERS
            for previous, current in zip(tokens, tokens[1:])
        )
    return repetitions


def repetition_rate(text: str) -> float:
    """Immediate word repetitions per 100 words; 0.0 for a text without words."""
    words = count_words(text)
    return 100.0 * count_repetitions(text) / words if words else 0.0


def count_markers(text: str) -> dict[str, int]:
    """The additive counts behind a summary: words, fillers and repetitions of one text."""
    tokens = tokenize(text)
    return {"words": len(tokens), "fillers": sum(token in FILLERS for token in tokens),
            "repetitions": count_repetitions(text)}


def rates(n: int, words: int, fillers: int, repetitions: int) -> dict:
    """A summary from summed counts, so one stored per text can be added up without the texts."""
    return {
        "n": n,
        "mean_words": words / n if n else 0.0,
        "fillers_per_100_words": 100.0 * fillers / words if words else 0.0,
        "repetitions_per_100_words": 100.0 * repetitions / words if words else 0.0,
    }


def summarise(texts: Iterable[str]) -> dict:
    """Corpus-level markers: text count, mean words, fillers and repetitions per 100 words."""
    n = words = fillers = repetitions = 0
    for text in texts:
        counts = count_markers(text)
        n += 1
        words += counts["words"]
        fillers += counts["fillers"]
        repetitions += counts["repetitions"]
    return rates(n, words, fillers, repetitions)
