"""Augmentation utility: does adding synthetic transcripts to the real train split help a classifier
tell the labels apart in real test participants?

Each classifier is trained on the real train split alone, then on it plus synthetic samples of 1x and
2x its size, and judged per participant on the real test split: a participant's probability is the
mean over their transcripts, read as the positive label at 0.5 or above. Every metric gets a percentile
bootstrap interval over test participants, and each augmented arm its gain over the real-only arm,
paired (both arms scored on the same resampled participants).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from app.domain.report.classifiers import CLASSIFIERS, ClassifierFactory
from app.domain.report.transcript import Transcript
from app.domain.splits import participant_key

POSITIVE_LABEL = "impaired"
MULTIPLES = (1, 2)
RESAMPLES = 1000
CONFIDENCE = 0.95
DECISION_THRESHOLD = 0.5
METRICS = ("accuracy", "f1", "roc_auc")
BASELINE = "real"


@dataclass(frozen=True)
class Estimate:
    """A value on all test participants and its bootstrap interval.

    None where it is undefined (F1 without a positive truth or prediction, ROC AUC without both labels).
    The interval is taken over the resamples on which the value is defined.
    """

    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ArmScores:
    """The metrics of one arm and, but for the baseline, their gain over the baseline."""

    metrics: dict[str, Estimate]
    gain: dict[str, Estimate] | None


@dataclass(frozen=True)
class ArmResult:
    """One classifier trained on one arm: the real train split plus ``synthetic_rows`` samples.

    ``synthetic_target`` is ``synthetic_multiple`` times the real train rows; a corpus smaller than
    the target is used whole, so its arms can hold the same samples.
    """

    classifier: str
    arm: str
    synthetic_multiple: int
    synthetic_target: int
    synthetic_rows: dict[str, int]
    metrics: dict[str, Estimate]
    gain: dict[str, Estimate] | None


@dataclass(frozen=True)
class UtilityReport:
    positive_label: str
    train_rows: int
    synthetic_available: int
    test_participants: int
    resamples: int
    confidence: float
    seed: int
    results: list[ArmResult]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_utility(
    train: Sequence[Transcript],
    synthetic: Sequence[Transcript],
    test: Sequence[Transcript],
    *,
    positive: str = POSITIVE_LABEL,
    multiples: Sequence[int] = MULTIPLES,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    classifiers: Mapping[str, ClassifierFactory] = CLASSIFIERS,
) -> UtilityReport:
    """Every classifier on every arm, scored on the test participants (arm names "real", "real+1x", ...)."""
    labels = _check_labels(train, synthetic, test, positive)
    _check_disjoint(train, test)
    groups, truth = group_participants(test, positive)
    arms: list[tuple[str, int, list[Transcript]]] = [(BASELINE, 0, [])]
    arms += [(f"real+{m}x", m, draw_synthetic(synthetic, m * len(train), labels, seed)) for m in multiples]
    resampled = resample_participants(len(truth), resamples, seed)
    results = []
    for name, factory in classifiers.items():
        probabilities = {}
        for arm, _, drawn in arms:
            rows = [*train, *drawn]
            classifier = factory([t.text for t in rows], [t.label for t in rows])
            by_row = np.array(classifier.predict_proba([t.text for t in test], positive))
            probabilities[arm] = np.array([by_row[rows_of].mean() for rows_of in groups])
        scores = score_arms(truth, probabilities, BASELINE, resampled, confidence)
        results += [
            ArmResult(
                classifier=name,
                arm=arm,
                synthetic_multiple=multiple,
                synthetic_target=multiple * len(train),
                synthetic_rows={label: sum(t.label == label for t in drawn) for label in labels},
                metrics=scores[arm].metrics,
                gain=scores[arm].gain,
            )
            for arm, multiple, drawn in arms
        ]
    return UtilityReport(positive, len(train), len(synthetic), len(truth), resamples, confidence, seed, results)


def draw_synthetic(synthetic: Sequence[Transcript], target: int, labels: Sequence[str], seed: int) -> list[Transcript]:
    """Up to ``target`` samples, as evenly split over ``labels`` as the corpus allows.

    A label short of its even share gives all it has and the others make up the rest while they can;
    a corpus smaller than the target is taken whole. Each label's samples are drawn in one seeded order,
    so a larger target keeps the samples of a smaller one (the 2x arm holds the 1x arm's samples).
    """
    rng = random.Random(seed)
    pools = {}
    for label in sorted(labels):
        pool = [t for t in synthetic if t.label == label]
        rng.shuffle(pool)
        pools[label] = pool
    quotas = allocate(target, {label: len(pool) for label, pool in pools.items()})
    return [t for label, pool in pools.items() for t in pool[: quotas[label]]]


def allocate(target: int, available: Mapping[str, int]) -> dict[str, int]:
    """Even shares of ``target`` capped by what each label has; the smaller labels are served first and
    their leftovers shared by the rest (a share that does not divide evenly rounds up for the first)."""
    quotas = {}
    remaining = target
    order = sorted(available, key=lambda label: (available[label], label))
    for position, label in enumerate(order):
        left = len(order) - position
        share = -(-remaining // left)
        quotas[label] = min(available[label], share)
        remaining -= quotas[label]
    return quotas


def group_participants(test: Sequence[Transcript], positive: str) -> tuple[list[list[int]], np.ndarray]:
    """Row positions of each test participant and whether the participant's label is ``positive``.

    Participants are compared as ingestion does (``participant_key``); a row without one stands alone.
    """
    rows: dict[str, list[int]] = {}
    for position, t in enumerate(test):
        key = participant_key(t.participant) if t.participant is not None else f"\0{t.id}"
        rows.setdefault(key, []).append(position)
    truth = []
    for key, positions in rows.items():
        participant_labels = {test[p].label for p in positions}
        if len(participant_labels) > 1:
            raise ValueError(f"test participant {test[positions[0]].participant} has rows of two labels")
        truth.append(participant_labels.pop() == positive)
    return list(rows.values()), np.array(truth, dtype=bool)


def resample_participants(participants: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of participant positions drawn with replacement, shared by every arm."""
    return np.random.default_rng(seed).integers(0, participants, size=(resamples, participants))


def score_arms(
    truth: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    baseline: str,
    resampled: np.ndarray,
    confidence: float = CONFIDENCE,
) -> dict[str, ArmScores]:
    """Metrics of each arm's participant probabilities, and gains over ``baseline``, with bootstrap intervals."""
    point = {arm: score_participants(truth, p) for arm, p in probabilities.items()}
    boot = {arm: _score_resamples(truth, p, resampled) for arm, p in probabilities.items()}
    scores = {}
    for arm in probabilities:
        metrics = {m: estimate(point[arm][m], boot[arm][:, k], confidence) for k, m in enumerate(METRICS)}
        gain = None
        if arm != baseline:
            gain = {
                m: estimate(
                    _difference(point[arm][m], point[baseline][m]), boot[arm][:, k] - boot[baseline][:, k], confidence
                )
                for k, m in enumerate(METRICS)
            }
        scores[arm] = ArmScores(metrics, gain)
    return scores


def score_participants(truth: np.ndarray, probability: np.ndarray) -> dict[str, float | None]:
    """Accuracy, F1 of the positive label and ROC AUC (ties count one half) of participant probabilities."""
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(probability) >= DECISION_THRESHOLD
    true_positive = int(np.sum(predicted & truth))
    errors = int(np.sum(predicted != truth))
    positives, negatives = int(truth.sum()), int((~truth).sum())
    auc = None
    if positives and negatives:
        ranks = rankdata(probability)
        auc = float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    return {
        "accuracy": float(np.mean(predicted == truth)) if len(truth) else None,
        # 2TP / (2TP + FP + FN): FP + FN are the errors.
        "f1": 2 * true_positive / (2 * true_positive + errors) if true_positive or errors else None,
        "roc_auc": auc,
    }


def estimate(value: float | None, resampled: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """``value`` with the percentile interval (linear interpolation) of its defined (not NaN) resampled values."""
    defined = resampled[~np.isnan(resampled)]
    if not len(defined):
        return Estimate(value, None, None)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))


def _score_resamples(truth: np.ndarray, probability: np.ndarray, resampled: np.ndarray) -> np.ndarray:
    """One row per resample, one column per metric; NaN where a metric is undefined."""
    scores = np.full((len(resampled), len(METRICS)), np.nan)
    for row, participants in enumerate(resampled):
        values = score_participants(truth[participants], probability[participants])
        for column, metric in enumerate(METRICS):
            if values[metric] is not None:
                scores[row, column] = values[metric]
    return scores


def _difference(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else value - baseline


def _check_labels(
    train: Sequence[Transcript], synthetic: Sequence[Transcript], test: Sequence[Transcript], positive: str
) -> list[str]:
    labels = sorted({t.label for t in train})
    if len(labels) != 2 or positive not in labels:
        raise ValueError(f"utility needs real train texts of two labels, one of them {positive!r}; got {labels}")
    if not test:
        raise ValueError("utility needs real test transcripts to score on")
    unknown = {t.label for t in (*synthetic, *test)} - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the train labels {labels}")
    return labels


def _check_disjoint(train: Sequence[Transcript], test: Sequence[Transcript]) -> None:
    # A test participant seen in training would flatter every arm alike and hide what augmentation adds.
    seen = {participant_key(t.participant) for t in train if t.participant is not None}
    shared = sorted({
        t.participant for t in test if t.participant is not None and participant_key(t.participant) in seen
    })
    if shared:
        raise ValueError(f"test participants also in the train split: {', '.join(shared[:5])}")
