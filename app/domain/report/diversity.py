"""How varied a set of texts is: distinct-n and self-BLEU."""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

from app.domain.markers import tokenize

BLEU_ORDER = 4
SELF_BLEU_MAX_TEXTS = 1000


@dataclass(frozen=True)
class DiversityReport:
    """Distinct-n over all texts (None without an n-gram); self-BLEU over ``self_bleu_texts`` of them
    (None with fewer than two). Higher distinct-n and lower self-BLEU mean a more varied set."""

    texts: int
    distinct_1: float | None
    distinct_2: float | None
    distinct_3: float | None
    self_bleu: float | None
    self_bleu_texts: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure_diversity(texts: Sequence[str], max_texts: int = SELF_BLEU_MAX_TEXTS, seed: int = 0) -> DiversityReport:
    """Distinct-1/2/3 and self-BLEU of a set of texts; self-BLEU on a seeded sample of ``max_texts``."""
    tokenised = [tokenize(text) for text in texts]
    sample = tokenised
    if len(tokenised) > max_texts:
        sample = [tokenised[i] for i in sorted(random.Random(seed).sample(range(len(tokenised)), max_texts))]
    return DiversityReport(
        texts=len(tokenised),
        distinct_1=distinct_n(tokenised, 1),
        distinct_2=distinct_n(tokenised, 2),
        distinct_3=distinct_n(tokenised, 3),
        self_bleu=self_bleu(sample),
        self_bleu_texts=len(sample),
    )


def distinct_n(tokenised: Sequence[Sequence[str]], n: int) -> float | None:
    """Distinct word n-grams over all n-grams of the set; n-grams do not cross from one text to the next."""
    grams = [gram for tokens in tokenised for gram in _ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else None


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Sentence BLEU-4 against several references, smoothed for short texts.

    Papineni et al.: n-gram precisions clipped by the most times any one reference has the n-gram,
    their geometric mean with equal weights, a brevity penalty against the reference length closest to
    the hypothesis's (the shorter on a tie). Smoothing after Lin & Och (2004): for n > 1, one is added
    to the matched and the total n-gram counts, so one missing 4-gram does not zero the score. A
    hypothesis without words, or without a matched word, scores 0.
    """
    if not references:
        raise ValueError("BLEU needs at least one reference")
    clips = [_max_counts(references, n) for n in range(1, BLEU_ORDER + 1)]
    return _bleu(hypothesis, clips, _closest_length(len(hypothesis), sorted({len(r) for r in references})))


def self_bleu(tokenised: Sequence[Sequence[str]]) -> float | None:
    """Mean BLEU-4 of each text against all the others as references; None with fewer than two texts."""
    if len(tokenised) < 2:
        return None
    counts = [[Counter(_ngrams(tokens, n)) for n in range(1, BLEU_ORDER + 1)] for tokens in tokenised]
    # The two highest counts of each n-gram over all texts, with the text holding the highest: the
    # clip against "all texts but i" is then the highest, or the second when text i holds the highest.
    # This keeps self-BLEU linear in the size of the set rather than quadratic.
    top: list[dict[tuple[str, ...], tuple[int, int, int]]] = [{} for _ in range(BLEU_ORDER)]
    for owner, text_counts in enumerate(counts):
        for order, gram_counts in enumerate(text_counts):
            for gram, count in gram_counts.items():
                first, holder, second = top[order].get(gram, (0, -1, 0))
                if count > first:
                    top[order][gram] = (count, owner, first)
                elif count > second:
                    top[order][gram] = (first, holder, count)
    lengths = Counter(len(tokens) for tokens in tokenised)
    distinct_lengths = sorted(lengths)
    scores = []
    for i, tokens in enumerate(tokenised):
        clips = []
        for order in range(BLEU_ORDER):
            clip = {}
            for gram in counts[i][order]:
                first, holder, second = top[order][gram]
                clip[gram] = second if holder == i else first
            clips.append(clip)
        others = distinct_lengths if lengths[len(tokens)] > 1 else [n for n in distinct_lengths if n != len(tokens)]
        scores.append(_bleu(tokens, clips, _closest_length(len(tokens), others)))
    return sum(scores) / len(scores)


def _bleu(hypothesis: Sequence[str], clips: list[dict[tuple[str, ...], int]], reference_length: int) -> float:
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n, clip in enumerate(clips, start=1):
        grams = Counter(_ngrams(hypothesis, n))
        matched = sum(min(count, clip.get(gram, 0)) for gram, count in grams.items())
        total = sum(grams.values())
        if n > 1:
            matched, total = matched + 1, total + 1
        if matched == 0:
            return 0.0
        log_precision += math.log(matched / total) / len(clips)
    brevity = min(0.0, 1.0 - reference_length / len(hypothesis))
    return math.exp(log_precision + brevity)


def _max_counts(references: Sequence[Sequence[str]], n: int) -> dict[tuple[str, ...], int]:
    clip: dict[tuple[str, ...], int] = {}
    for reference in references:
        for gram, count in Counter(_ngrams(reference, n)).items():
            clip[gram] = max(count, clip.get(gram, 0))
    return clip


def _closest_length(length: int, sorted_lengths: Sequence[int]) -> int:
    position = bisect.bisect_left(sorted_lengths, length)
    candidates = sorted_lengths[max(position - 1, 0) : position + 1]
    return min(candidates, key=lambda n: (abs(n - length), n))


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
