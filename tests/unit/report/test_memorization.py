"""Nearest real training transcript of each synthetic sample, against held-out real transcripts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.domain.report.memorization import measure_memorization
from app.domain.report.transcript import Transcript

TRAIN = [
    Transcript("t1", "The boy is on the stool taking cookies from the jar.", "impaired", "P1"),
    Transcript("t2", "The mother is drying dishes at the sink.", "control", "P2"),
]
SYNTHETIC = [
    # "the boy is on the stool taking cookies from the jar": 11 words of t1.
    Transcript("s1", "Look, the boy is on the stool taking cookies from the jar again.", "impaired"),
    # "the sink": 2 words of t2 ("the" alone of t1).
    Transcript("s2", "Water spills over the sink.", "control"),
    Transcript("s3", "A dog barks.", "control"),
]
HELD_OUT = [
    # "the boy is on the stool": 6 words of t1.
    Transcript("h1", "The boy is on the stool and he falls.", "impaired", "P3"),
    Transcript("h2", "Nothing here.", "control", "P4"),
]
# Unit vectors where cosines are plain: s1 on t1 (1), s2 between both (1/sqrt 2, the first, t1, wins the
# tie), s3 opposite t1 and square to t2 (0, nearest t2); h1 (0.6 to t1, 0.8 to t2), h2 on t2 (1).
TRAIN_EMBEDDINGS = np.array([[1.0, 0.0], [0.0, 1.0]])
SYNTHETIC_EMBEDDINGS = np.array([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
HELD_OUT_EMBEDDINGS = np.array([[0.6, 0.8], [0.0, 3.0]])


def with_embeddings(**kwargs):
    return measure_memorization(
        SYNTHETIC, TRAIN, HELD_OUT,
        synthetic_embeddings=SYNTHETIC_EMBEDDINGS,
        train_embeddings=TRAIN_EMBEDDINGS,
        held_out_embeddings=HELD_OUT_EMBEDDINGS,
        **kwargs,
    )


class TestWordOverlap:
    def test_synthetic_closeness(self):
        # Runs 11, 2, 0: 1 of 3 at or above 8 words; mean 13/3; median 2; p95 by linear interpolation at
        # position 0.95 * 2 = 1.9: 2 + 0.9 * (11 - 2) = 10.1.
        synthetic = measure_memorization(SYNTHETIC, TRAIN, HELD_OUT).synthetic
        assert synthetic.n == 3
        assert synthetic.share_words_at_or_above == pytest.approx(1 / 3)
        assert (synthetic.mean_words, synthetic.median_words, synthetic.max_words) == pytest.approx((13 / 3, 2.0, 11))
        assert synthetic.p95_words == pytest.approx(10.1)

    def test_held_out_baseline(self):
        # Runs 6 and 0: none at 8 words.
        held_out = measure_memorization(SYNTHETIC, TRAIN, HELD_OUT).held_out
        assert held_out.n == 2
        assert held_out.share_words_at_or_above == 0.0
        assert held_out.mean_words == pytest.approx(3.0)

    def test_threshold_counts_at_or_above(self):
        report = measure_memorization(SYNTHETIC, TRAIN, HELD_OUT, words_threshold=6)
        assert report.words_threshold == 6
        assert report.held_out.share_words_at_or_above == pytest.approx(0.5)

    def test_no_cosine_without_embeddings(self):
        report = measure_memorization(SYNTHETIC, TRAIN, HELD_OUT)
        assert report.synthetic.share_cosine_at_or_above is None and report.synthetic.max_cosine is None
        assert report.worst_by_cosine == []

    def test_an_empty_held_out_set(self):
        held_out = measure_memorization(SYNTHETIC, TRAIN).held_out
        assert held_out.n == 0 and held_out.share_words_at_or_above is None


class TestWorstExamples:
    def test_longest_runs_first_with_the_real_text_and_participant(self):
        worst = measure_memorization(SYNTHETIC, TRAIN, HELD_OUT).worst_by_words
        # s3 shares no word and is left out.
        assert [(e.sample_id, e.real_id, e.participant, e.words) for e in worst] == [
            ("s1", "t1", "P1", 11), ("s2", "t2", "P2", 2),
        ]
        assert (worst[0].sample_text, worst[0].real_text, worst[0].label) == (
            SYNTHETIC[0].text, TRAIN[0].text, "impaired",
        )

    def test_at_most_k(self):
        assert [e.sample_id for e in measure_memorization(SYNTHETIC, TRAIN, worst=1).worst_by_words] == ["s1"]

    def test_by_cosine_most_similar_first_with_the_pairs_own_overlap(self):
        worst = with_embeddings().worst_by_cosine
        # s2's nearest by cosine is t1, with which it shares only "the".
        assert [(e.sample_id, e.real_id, e.words) for e in worst] == [
            ("s1", "t1", 11), ("s2", "t1", 1), ("s3", "t2", 0),
        ]
        assert [e.cosine for e in worst] == pytest.approx([1.0, 1 / math.sqrt(2), 0.0])

    def test_by_words_shows_the_cosine_of_its_own_pair(self):
        # s2 is nearest t2 by words; its cosine to t2 is 1/sqrt 2 as well, taken from t2's vector.
        s2 = with_embeddings().worst_by_words[1]
        assert (s2.real_id, s2.cosine) == ("t2", pytest.approx(1 / math.sqrt(2)))


class TestCosine:
    def test_synthetic_and_held_out_closeness(self):
        report = with_embeddings()
        # Synthetic cosines 1, 0.7071, 0: 1 of 3 at or above 0.95. Held-out 0.8 and 1: 1 of 2.
        assert report.cosine_threshold == 0.95
        assert report.synthetic.share_cosine_at_or_above == pytest.approx(1 / 3)
        assert report.synthetic.mean_cosine == pytest.approx((1 + 1 / math.sqrt(2)) / 3)
        assert report.held_out.share_cosine_at_or_above == pytest.approx(0.5)
        assert report.held_out.max_cosine == pytest.approx(1.0)

    def test_a_zero_vector_is_similar_to_nothing(self):
        report = measure_memorization(
            SYNTHETIC[:1], TRAIN,
            synthetic_embeddings=np.zeros((1, 2)), train_embeddings=TRAIN_EMBEDDINGS,
        )
        assert report.synthetic.max_cosine == 0.0

    def test_needs_the_train_embeddings(self):
        with pytest.raises(ValueError, match="train embeddings"):
            measure_memorization(SYNTHETIC, TRAIN, synthetic_embeddings=SYNTHETIC_EMBEDDINGS)

    def test_one_embedding_per_text(self):
        with pytest.raises(ValueError, match="2 embeddings for 3 texts"):
            measure_memorization(
                SYNTHETIC, TRAIN, synthetic_embeddings=np.ones((2, 2)), train_embeddings=TRAIN_EMBEDDINGS,
            )
        with pytest.raises(ValueError, match="width"):
            measure_memorization(
                SYNTHETIC, TRAIN, synthetic_embeddings=np.ones((3, 4)), train_embeddings=TRAIN_EMBEDDINGS,
            )


def test_report_serialises_to_json():
    decoded = json.loads(json.dumps(with_embeddings().as_dict()))
    assert decoded["worst_by_words"][0]["participant"] == "P1"
    assert decoded["held_out"]["n"] == 2
