"""Augmentation utility: classifiers on real and real + synthetic, scored per test participant."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.domain.report.transcript import Transcript
from app.domain.report.utility import (
    Estimate,
    allocate,
    draw_synthetic,
    estimate,
    group_participants,
    measure_utility,
    resample_participants,
    score_arms,
    score_participants,
)

SCENES = [
    "the boy is on the stool", "the mother dries a plate", "water runs over the sink",
    "the girl wants a cookie", "the stool is tipping over", "the curtains hang by the window",
]


def control_text(i: int) -> str:
    return f"{SCENES[i % 6]} and {SCENES[(i + 1) % 6]}."


def impaired_text(i: int) -> str:
    # The same scenes, told with fillers: the one thing that tells the labels apart.
    return f"uh {SCENES[i % 6]} um uh and um {SCENES[(i + 1) % 6]} uh."


def real(prefix: str, participants: int, rows: int, offset: int = 0) -> list[Transcript]:
    return [
        Transcript(f"{prefix}{label[0]}{p}.{r}", text(p + r + offset), label, f"{prefix}{label[0]}{p}")
        for label, text in (("control", control_text), ("impaired", impaired_text))
        for p in range(participants)
        for r in range(rows)
    ]


def synthetic(per_label: int, flipped: bool = False) -> list[Transcript]:
    texts = {"control": control_text, "impaired": impaired_text}
    if flipped:
        texts = {"control": impaired_text, "impaired": control_text}
    return [Transcript(f"s{label[0]}{i}", texts[label](i), label) for label in texts for i in range(per_label)]


TRAIN = real("train-", participants=6, rows=1)  # 12 rows
TEST = real("test-", participants=2, rows=2, offset=3)  # 4 participants, 8 rows


class TestScoreParticipants:
    def test_hand_computed(self):
        # Predicted positive at 0.5: T, F, T, F against truth T, T, F, F: 2 of 4 right; TP 1, FP 1, FN 1,
        # F1 = 2 / (2 + 1 + 1). AUC: of the pairs (0.9, 0.6), (0.9, 0.1), (0.4, 0.6), (0.4, 0.1) 3 of 4 ranked right.
        scores = score_participants(np.array([True, True, False, False]), np.array([0.9, 0.4, 0.6, 0.1]))
        assert scores == pytest.approx({"accuracy": 0.5, "f1": 0.5, "roc_auc": 0.75})

    def test_a_tie_counts_one_half(self):
        # Both predicted positive: TP 1, FP 1, F1 = 2 / (2 + 1); the one pair tied: AUC 1/2.
        scores = score_participants(np.array([True, False]), np.array([0.5, 0.5]))
        assert scores == pytest.approx({"accuracy": 0.5, "f1": 2 / 3, "roc_auc": 0.5})

    def test_undefined_without_positives_or_without_both_labels(self):
        scores = score_participants(np.array([False, False]), np.array([0.1, 0.2]))
        assert scores == {"accuracy": 1.0, "f1": None, "roc_auc": None}


class TestEstimate:
    def test_percentile_interval(self):
        # 0, 1, ..., 100: the 2.5th and 97.5th percentiles are 2.5 and 97.5.
        result = estimate(50.0, np.arange(101, dtype=float))
        assert result == Estimate(50.0, pytest.approx(2.5), pytest.approx(97.5))

    def test_undefined_resamples_are_left_out(self):
        # Over 1 and 3 only: 1 + 0.025 * 2 and 1 + 0.975 * 2.
        result = estimate(2.0, np.array([np.nan, 1.0, 3.0]))
        assert (result.low, result.high) == pytest.approx((1.05, 2.95))

    def test_no_defined_resample_has_no_interval(self):
        assert estimate(None, np.array([np.nan, np.nan])) == Estimate(None, None, None)


class TestScoreArms:
    def test_paired_bootstrap_of_two_participants(self):
        # Truth T, F. "real" reads both as positive (1 of 2 right); "augmented" reads both right.
        # A resample holds participant 2 twice with chance 1/4, so real's accuracy ranges over 0 .. 1;
        # augmented's is always 1; the paired gain 1 - real's accuracy ranges over 0 .. 1.
        # Real's AUC is 1 whenever a resample holds both (0.9 > 0.8), undefined otherwise.
        truth = np.array([True, False])
        probabilities = {"real": np.array([0.9, 0.8]), "augmented": np.array([0.9, 0.2])}
        scores = score_arms(truth, probabilities, "real", resample_participants(2, 1000, seed=0))
        assert scores["real"].gain is None
        assert scores["real"].metrics["accuracy"] == Estimate(0.5, 0.0, 1.0)
        assert scores["real"].metrics["roc_auc"] == Estimate(1.0, 1.0, 1.0)
        assert scores["augmented"].metrics["accuracy"] == Estimate(1.0, 1.0, 1.0)
        assert scores["augmented"].gain["accuracy"] == Estimate(0.5, 0.0, 1.0)
        # F1: real 2 / (2 + 1), augmented 1.
        assert scores["augmented"].gain["f1"].value == pytest.approx(1 / 3)


class TestAllocate:
    def test_even_shares(self):
        assert allocate(6, {"control": 10, "impaired": 10}) == {"control": 3, "impaired": 3}

    def test_an_odd_target_rounds_up_for_the_first_label(self):
        assert allocate(5, {"control": 10, "impaired": 10}) == {"control": 3, "impaired": 2}

    def test_a_short_label_gives_all_it_has_and_the_other_makes_up_the_rest(self):
        assert allocate(6, {"control": 10, "impaired": 1}) == {"impaired": 1, "control": 5}

    def test_a_corpus_smaller_than_the_target_is_taken_whole(self):
        assert allocate(30, {"control": 10, "impaired": 10}) == {"control": 10, "impaired": 10}


class TestDrawSynthetic:
    def test_a_larger_target_keeps_the_samples_of_a_smaller_one(self):
        corpus = synthetic(per_label=10)
        small = draw_synthetic(corpus, 4, ["control", "impaired"], seed=3)
        large = draw_synthetic(corpus, 12, ["control", "impaired"], seed=3)
        assert [t.label for t in small].count("impaired") == 2
        assert [t.label for t in large].count("impaired") == 6
        assert {t.id for t in small} <= {t.id for t in large}

    def test_seeded(self):
        corpus = synthetic(per_label=10)
        assert draw_synthetic(corpus, 6, ["control", "impaired"], seed=1) == draw_synthetic(
            corpus, 6, ["control", "impaired"], seed=1
        )
        assert draw_synthetic(corpus, 6, ["control", "impaired"], seed=1) != draw_synthetic(
            corpus, 6, ["control", "impaired"], seed=2
        )


class TestGroupParticipants:
    def test_participants_are_compared_as_ingestion_does(self):
        rows = [
            Transcript("a", "x", "impaired", "P01"),
            Transcript("b", "y", "control", "P02"),
            Transcript("c", "z", "impaired", " p01"),
            Transcript("d", "w", "control", None),
        ]
        groups, truth = group_participants(rows, "impaired")
        assert groups == [[0, 2], [1], [3]]
        assert truth.tolist() == [True, False, False]

    def test_a_participant_of_two_labels_is_refused(self):
        rows = [Transcript("a", "x", "impaired", "P01"), Transcript("b", "y", "control", "P01")]
        with pytest.raises(ValueError, match="P01"):
            group_participants(rows, "impaired")


@pytest.fixture(scope="module")
def faithful():
    report = measure_utility(TRAIN, synthetic(per_label=10), TEST, resamples=200)
    return {(r.classifier, r.arm): r for r in report.results}


class TestMeasureUtility:
    def test_arms_of_one_and_two_times_the_real_train_rows(self, faithful):
        # 12 real rows: 1x = 6 + 6 samples; 2x would be 24, but the corpus holds 10 + 10.
        arms = {arm: (r.synthetic_target, r.synthetic_rows) for (name, arm), r in faithful.items() if name == "text"}
        assert arms == {
            "real": (0, {"control": 0, "impaired": 0}),
            "real+1x": (12, {"control": 6, "impaired": 6}),
            "real+2x": (24, {"control": 10, "impaired": 10}),
        }

    def test_separable_labels_are_told_apart_in_every_arm(self, faithful):
        # Fillers alone mark "impaired" in train, synthetic and test alike: every participant is read
        # right in every resample; a resample of one label has no AUC and is left out.
        for result in faithful.values():
            for metric in ("accuracy", "f1", "roc_auc"):
                assert result.metrics[metric] == Estimate(1.0, 1.0, 1.0), (result.classifier, result.arm, metric)

    def test_no_gain_over_a_perfect_baseline(self, faithful):
        assert faithful[("markers", "real")].gain is None
        for arm in ("real+1x", "real+2x"):
            assert faithful[("markers", arm)].gain["accuracy"] == Estimate(0.0, 0.0, 0.0)

    def test_label_flipped_synthetic_text_is_a_loss(self):
        # At 2x, 20 samples with the labels swapped outvote the 12 real rows: every test participant is
        # read wrong, accuracy 0, a gain of -1 in every resample.
        report = measure_utility(TRAIN, synthetic(per_label=10, flipped=True), TEST, multiples=(2,), resamples=100)
        for result in report.results:
            if result.arm == "real+2x":
                assert result.metrics["accuracy"] == Estimate(0.0, 0.0, 0.0)
                assert result.gain["accuracy"] == Estimate(-1.0, -1.0, -1.0)

    def test_report_serialises_to_json(self):
        report = measure_utility(TRAIN, synthetic(per_label=2), TEST, multiples=(1,), resamples=10)
        decoded = json.loads(json.dumps(report.as_dict()))
        assert (decoded["positive_label"], decoded["train_rows"], decoded["test_participants"]) == ("impaired", 12, 4)
        assert len(decoded["results"]) == 4  # 2 classifiers x (real, real+1x)


class TestRefusals:
    def test_a_test_participant_seen_in_training(self):
        leaked = [Transcript("x", control_text(0), "control", "train-c0")]
        with pytest.raises(ValueError, match="train-c0"):
            measure_utility(TRAIN, [], TEST + leaked, resamples=10)

    def test_labels_other_than_two_or_without_the_positive_one(self):
        with pytest.raises(ValueError, match="two labels"):
            measure_utility(TRAIN, [], TEST, positive="dementia")
        with pytest.raises(ValueError, match="not among"):
            measure_utility(TRAIN, [Transcript("s", "x", "mci")], TEST)

    def test_no_test_transcripts(self):
        with pytest.raises(ValueError, match="test"):
            measure_utility(TRAIN, [], [])
