"""Repeated-word and repeated-phrase runs."""

from __future__ import annotations

from app.domain.degeneration import longest_repeat, repeat_limit
from app.domain.markers import tokenize


class TestLongestRepeat:
    def test_single_word_run(self):
        run = longest_repeat(tokenize("and the the the the boy"))
        assert (run.count, run.phrase) == (4, ("the",))

    def test_phrase_run(self):
        run = longest_repeat(tokenize("it is and then and then and then it stops"))
        assert (run.count, run.phrase) == (3, ("and", "then"))

    def test_a_long_loop_is_counted_whole(self):
        assert longest_repeat(["the"] * 40).count == 40
        assert longest_repeat(["on", "the", "stool"] * 7).count == 7

    def test_no_repetition_is_one(self):
        assert longest_repeat(tokenize("the boy is on the stool")).count == 1
        assert longest_repeat([]).count == 1

    def test_phrases_longer_than_four_words_are_not_loops(self):
        assert longest_repeat(["a", "b", "c", "d", "e"] * 2).count == 1


def test_repeat_limit_is_the_most_any_text_repeats():
    assert repeat_limit([tokenize("uh the the boy"), tokenize("a a a cookie")]) == 3
    assert repeat_limit([]) == 1
