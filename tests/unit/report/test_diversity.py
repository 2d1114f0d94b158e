"""Distinct-n, sentence BLEU and self-BLEU."""

from __future__ import annotations

import json
import math
import random

import pytest

from app.domain.markers import tokenize
from app.domain.report.diversity import bleu, distinct_n, measure_diversity, self_bleu


def words(text: str) -> list[str]:
    return text.split()


class TestDistinctN:
    TEXTS = [words("the boy the girl"), words("the boy")]

    def test_unigrams(self):
        # the, boy, the, girl, the, boy: 3 distinct of 6.
        assert distinct_n(self.TEXTS, 1) == pytest.approx(0.5)

    def test_bigrams(self):
        # "the boy", "boy the", "the girl", "the boy": 3 distinct of 4.
        assert distinct_n(self.TEXTS, 2) == pytest.approx(0.75)

    def test_ngrams_do_not_cross_texts(self):
        # Only "the boy the" and "boy the girl"; "girl the boy" would span the two texts.
        assert distinct_n(self.TEXTS, 3) == pytest.approx(1.0)

    def test_no_ngram_is_undefined(self):
        assert distinct_n([words("a b")], 3) is None
        assert distinct_n([], 1) is None


class TestBleu:
    def test_hand_computed(self):
        # Precisions: 1-grams 5/6 ("the" clipped to 1); 2-grams 3 of 5, smoothed (3+1)/(5+1);
        # 3-grams 2 of 4 -> 3/5; 4-grams 1 of 3 -> 2/4. Equal lengths: no brevity penalty.
        # (5/6 * 4/6 * 3/5 * 2/4) ** (1/4) = (1/6) ** (1/4) = 0.6389.
        score = bleu(words("the boy is on the stool"), [words("the boy is on a stool")])
        assert score == pytest.approx((1 / 6) ** 0.25)

    def test_clips_by_the_most_any_one_reference_has(self):
        # "the" at most twice in one reference: 1-grams 2/3; "the the" at most once: (1+1)/(2+1);
        # "the the the" nowhere: (0+1)/(1+1); no 4-gram: (0+1)/(0+1). Closest length 3: no penalty.
        score = bleu(words("the the the"), [words("the cat"), words("the the dog")])
        assert score == pytest.approx((2 / 3 * 2 / 3 * 1 / 2 * 1) ** 0.25)

    def test_brevity_penalty(self):
        # Every precision 1 (smoothed where there is no n-gram), penalty exp(1 - 4/2).
        assert bleu(words("a b"), [words("a b c d")]) == pytest.approx(math.exp(-1))

    def test_a_tie_in_reference_length_takes_the_shorter(self):
        # References of 2 and 4 words are equally close to 3; with 2 there is no penalty
        # (with 4 it would be exp(1 - 4/3) = 0.72). Every precision is 1.
        assert bleu(words("a b c"), [words("a b"), words("a b c d")]) == pytest.approx(1.0)

    def test_no_shared_word_or_no_word_scores_zero(self):
        assert bleu(words("x y z"), [words("a b c")]) == 0.0
        assert bleu([], [words("a b c")]) == 0.0

    def test_needs_a_reference(self):
        with pytest.raises(ValueError):
            bleu(words("a"), [])


class TestSelfBleu:
    def test_each_text_against_the_others(self):
        # Either text against the other scores (1/6) ** (1/4), as in TestBleu.
        texts = [words("the boy is on the stool"), words("the boy is on a stool")]
        assert self_bleu(texts) == pytest.approx((1 / 6) ** 0.25)

    def test_identical_texts_score_one(self):
        assert self_bleu([words("the boy falls"), words("the boy falls")]) == pytest.approx(1.0)

    def test_fewer_than_two_texts_is_undefined(self):
        assert self_bleu([words("the boy falls")]) is None

    def test_agrees_with_bleu_against_all_other_texts(self):
        rng = random.Random(3)
        vocab = ["a", "b", "c", "d"]
        for _ in range(50):
            texts = [[rng.choice(vocab) for _ in range(rng.randint(0, 9))] for _ in range(rng.randint(2, 6))]
            expected = sum(bleu(t, texts[:i] + texts[i + 1 :]) for i, t in enumerate(texts)) / len(texts)
            assert self_bleu(texts) == pytest.approx(expected)


class TestMeasureDiversity:
    TEXTS = ["The boy falls.", "The girl laughs.", "Water runs over.", "The mother dries.", "The boy falls!"]

    def test_distinct_over_all_texts(self):
        report = measure_diversity(self.TEXTS)
        # 15 words; distinct: the, boy, falls, girl, laughs, water, runs, over, mother, dries = 10.
        assert report.texts == 5
        assert report.distinct_1 == pytest.approx(10 / 15)
        assert report.self_bleu_texts == 5

    def test_self_bleu_on_a_seeded_sample(self):
        report = measure_diversity(self.TEXTS, max_texts=3, seed=7)
        assert report.self_bleu_texts == 3
        sample = sorted(random.Random(7).sample(range(5), 3))
        assert report.self_bleu == pytest.approx(self_bleu([tokenize(self.TEXTS[i]) for i in sample]))
        assert measure_diversity(self.TEXTS, max_texts=3, seed=7) == report

    def test_serialises_to_json(self):
        decoded = json.loads(json.dumps(measure_diversity(self.TEXTS[:1]).as_dict()))
        assert decoded["self_bleu"] is None and decoded["distinct_1"] == pytest.approx(1.0)
