"""Memorization: how close each synthetic sample comes to a real training transcript, against how close
held-out real transcripts come to the same training set by nature (the baseline, as in SDMetrics'
DCR overfitting metric).

Closeness is the longest run of words a text shares with one training transcript (the index of
``app.domain.overlap``) and, when embeddings are given, the highest cosine similarity to one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from app.domain.markers import tokenize
from app.domain.overlap import LongestMatchIndex
from app.domain.report.transcript import Transcript

# The post-filter's default memorization_ngram: a run of 8 words is rarely shared by chance.
WORDS_THRESHOLD = 8
# Paraphrase-level sentence embeddings put reworded copies of one text around 0.9 and above, distinct
# descriptions of the same picture lower; 0.95 flags only near copies.
COSINE_THRESHOLD = 0.95
WORST_EXAMPLES = 10
_COSINE_CHUNK = 1024


@dataclass(frozen=True)
class Nearest:
    """The training transcripts closest to one text: by shared word run and, with embeddings, by cosine."""

    words: int
    by_words: int | None
    cosine: float | None
    by_cosine: int | None


@dataclass(frozen=True)
class Closeness:
    """How close one set of texts comes to the training set; shares are of texts at or above a threshold.

    Cosine fields are None without embeddings; every field but ``n`` is None for an empty set.
    """

    n: int
    share_words_at_or_above: float | None
    mean_words: float | None
    median_words: float | None
    p95_words: float | None
    max_words: int | None
    share_cosine_at_or_above: float | None
    mean_cosine: float | None
    median_cosine: float | None
    max_cosine: float | None


@dataclass(frozen=True)
class MemorizedExample:
    """A synthetic sample beside the training transcript it comes closest to, and what that pair shares."""

    sample_id: str
    sample_text: str
    label: str
    real_id: str
    real_text: str
    participant: str | None
    words: int
    cosine: float | None


@dataclass(frozen=True)
class MemorizationReport:
    words_threshold: int
    cosine_threshold: float
    synthetic: Closeness
    held_out: Closeness
    worst_by_words: list[MemorizedExample]
    worst_by_cosine: list[MemorizedExample]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_memorization(
    synthetic: Sequence[Transcript],
    train: Sequence[Transcript],
    held_out: Sequence[Transcript] = (),
    *,
    synthetic_embeddings: np.ndarray | None = None,
    train_embeddings: np.ndarray | None = None,
    held_out_embeddings: np.ndarray | None = None,
    words_threshold: int = WORDS_THRESHOLD,
    cosine_threshold: float = COSINE_THRESHOLD,
    worst: int = WORST_EXAMPLES,
) -> MemorizationReport:
    """Closeness of synthetic and held-out texts to the train set, and the ``worst`` closest samples.

    Embeddings are one row per text, in the order of the texts; cosine measures need the train
    embeddings and those of the side measured. ``worst_by_words`` lists samples sharing at least one
    word, longest run first; ``worst_by_cosine`` the most similar first, empty without embeddings.
    """
    train_tokens = [tokenize(t.text) for t in train]
    index = LongestMatchIndex(list(enumerate(train_tokens)))
    if train_embeddings is not None:
        train_embeddings = _check_rows(train_embeddings, len(train))
    elif synthetic_embeddings is not None or held_out_embeddings is not None:
        raise ValueError("cosine similarity to the train set needs the train embeddings")
    synthetic_nearest = find_nearest(synthetic, index, synthetic_embeddings, train_embeddings)
    held_out_nearest = find_nearest(held_out, index, held_out_embeddings, train_embeddings)

    def example(i: int, j: int) -> MemorizedExample:
        # The overlap shown is the pair's own: the nearest by words need not be the nearest by cosine.
        pair_words = LongestMatchIndex([(j, train_tokens[j])]).longest_match(tokenize(synthetic[i].text)).words
        pair_cosine = synthetic_nearest[i].cosine
        if pair_cosine is not None and j != synthetic_nearest[i].by_cosine:
            pair_cosine = _cosine(synthetic_embeddings[i], train_embeddings[j])
        return _example(synthetic[i], train[j], pair_words, pair_cosine)

    by_words = sorted(
        (i for i, near in enumerate(synthetic_nearest) if near.words > 0),
        key=lambda i: (-synthetic_nearest[i].words, i),
    )
    by_cosine = sorted(
        (i for i, near in enumerate(synthetic_nearest) if near.cosine is not None),
        key=lambda i: (-synthetic_nearest[i].cosine, i),
    )
    return MemorizationReport(
        words_threshold=words_threshold,
        cosine_threshold=cosine_threshold,
        synthetic=measure_closeness(synthetic_nearest, words_threshold, cosine_threshold),
        held_out=measure_closeness(held_out_nearest, words_threshold, cosine_threshold),
        worst_by_words=[example(i, synthetic_nearest[i].by_words) for i in by_words[:worst]],
        worst_by_cosine=[example(i, synthetic_nearest[i].by_cosine) for i in by_cosine[:worst]],
    )


def find_nearest(
    texts: Sequence[Transcript],
    index: LongestMatchIndex[int],
    embeddings: np.ndarray | None = None,
    train_embeddings: np.ndarray | None = None,
) -> list[Nearest]:
    """For each text, the train transcript (position in the indexed train set) closest by words and by cosine."""
    matches = [index.longest_match(tokenize(t.text)) for t in texts]
    if embeddings is None or train_embeddings is None or not len(texts):
        return [Nearest(m.words, m.document, None, None) for m in matches]
    similarity, nearest = _nearest_by_cosine(_check_rows(embeddings, len(texts)), train_embeddings)
    return [
        Nearest(m.words, m.document, float(s), int(j)) for m, s, j in zip(matches, similarity, nearest)
    ]


def measure_closeness(nearest: Sequence[Nearest], words_threshold: int, cosine_threshold: float) -> Closeness:
    """Summary of one set's nearest matches."""
    if not nearest:
        return Closeness(0, *([None] * 9))
    words = np.array([n.words for n in nearest], dtype=float)
    cosines = np.array([n.cosine for n in nearest if n.cosine is not None], dtype=float)
    with_cosine = len(cosines) > 0
    return Closeness(
        n=len(nearest),
        share_words_at_or_above=float(np.mean(words >= words_threshold)),
        mean_words=float(words.mean()),
        median_words=float(np.median(words)),
        p95_words=float(np.percentile(words, 95)),
        max_words=int(words.max()),
        share_cosine_at_or_above=float(np.mean(cosines >= cosine_threshold)) if with_cosine else None,
        mean_cosine=float(cosines.mean()) if with_cosine else None,
        median_cosine=float(np.median(cosines)) if with_cosine else None,
        max_cosine=float(cosines.max()) if with_cosine else None,
    )


def _nearest_by_cosine(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    queries, reference = _unit_rows(queries), _unit_rows(reference)
    if queries.shape[1] != reference.shape[1]:
        raise ValueError("embeddings of the texts and of the train set differ in width")
    if not len(reference):
        raise ValueError("cosine similarity needs train embeddings")
    best = np.empty(len(queries))
    where = np.empty(len(queries), dtype=int)
    # In chunks, so a large corpus never holds its whole similarity matrix at once.
    for start in range(0, len(queries), _COSINE_CHUNK):
        block = queries[start : start + _COSINE_CHUNK] @ reference.T
        where[start : start + len(block)] = block.argmax(axis=1)
        best[start : start + len(block)] = block.max(axis=1)
    return best, where


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=float)
    if vectors.ndim != 2:
        raise ValueError("embeddings must be a matrix with one vector per row")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A zero vector has no direction: it is given cosine 0 to everything rather than NaN.
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    unit_a, unit_b = _unit_rows(np.stack([a, b]))
    return float(unit_a @ unit_b)


def _check_rows(embeddings: np.ndarray, texts: int) -> np.ndarray:
    if len(embeddings) != texts:
        raise ValueError(f"{len(embeddings)} embeddings for {texts} texts")
    return embeddings


def _example(sample: Transcript, real: Transcript, words: int, cosine: float | None) -> MemorizedExample:
    return MemorizedExample(
        sample_id=sample.id,
        sample_text=sample.text,
        label=sample.label,
        real_id=real.id,
        real_text=real.text,
        participant=real.participant,
        words=words,
        cosine=cosine,
    )
