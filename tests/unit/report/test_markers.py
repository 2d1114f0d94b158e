"""Per-transcript linguistic markers and their summary over a set."""

from __future__ import annotations

import json
import math

import pytest

from app.domain.report.markers import (
    MARKER_NAMES,
    brunet_w,
    count_phrase_repetitions,
    honore_r,
    marker_values,
    measure_markers,
    moving_average_ttr,
    split_utterances,
    summarise_markers,
    type_token_ratio,
)
from app.domain.markers import tokenize


class TestSplitUtterances:
    def test_full_stops_questions_exclamations_and_line_breaks_end_an_utterance(self):
        assert split_utterances("The boy falls. Why? Oh no!\nThe mother dries") == [
            "The boy falls", " Why", " Oh no", "The mother dries",
        ]

    def test_a_pause_is_no_end(self):
        assert split_utterances("the boy... he falls.") == ["the boy... he falls"]


class TestPhraseRepetitions:
    def test_each_further_copy_counts_once(self):
        assert count_phrase_repetitions(tokenize("and then and then and then he falls")) == 2

    def test_phrases_of_two_to_four_words(self):
        assert count_phrase_repetitions(tokenize("the boy the boy")) == 1
        assert count_phrase_repetitions(tokenize("on the big stool on the big stool")) == 1
        assert count_phrase_repetitions(tokenize("on the very big stool on the very big stool")) == 0

    def test_a_repeated_word_is_no_phrase_repetition(self):
        # "the the" repeated is four "the": three word repetitions, left to that marker.
        assert count_phrase_repetitions(tokenize("the the the the boy")) == 0

    def test_fillers_alone_are_no_phrase(self):
        assert count_phrase_repetitions(tokenize("uh um uh um the boy")) == 0

    def test_a_phrase_across_an_utterance_end_does_not_count(self):
        assert measure_markers("He took the boy. The boy fell").phrase_repetitions_per_100_words == 0.0
        # 1 repetition in 7 words: 100 / 7.
        assert measure_markers("He took the boy... the boy fell").phrase_repetitions_per_100_words == pytest.approx(
            100 / 7
        )


class TestRates:
    # Utterances "Uh, he is on the the stool" (7 words) and "She... she laughs" (3 words).
    TEXT = "Uh, he is on the the stool. She... she laughs"

    def test_words_include_fillers(self):
        assert measure_markers(self.TEXT).words == 10

    def test_fillers_per_100_words(self):
        # 1 filler / 10 words.
        assert measure_markers(self.TEXT).fillers_per_100_words == pytest.approx(10.0)

    def test_mhm_is_a_filler(self):
        assert measure_markers("mhm the boy mhm").fillers_per_100_words == pytest.approx(50.0)

    def test_word_repetitions_per_100_words(self):
        # "the the" and "she... she": 2 / 10 words.
        assert measure_markers(self.TEXT).word_repetitions_per_100_words == pytest.approx(20.0)

    def test_word_repetition_does_not_cross_a_line_break(self):
        assert measure_markers("the cookie\ncookie jar").word_repetitions_per_100_words == 0.0

    def test_pronouns_per_100_words(self):
        # he, she, she: 3 / 10 words.
        assert measure_markers(self.TEXT).pronouns_per_100_words == pytest.approx(30.0)

    def test_contracted_pronouns_count_with_either_apostrophe(self):
        # he's, she’s: 2 / 4 words.
        assert measure_markers("he's up she’s down").pronouns_per_100_words == pytest.approx(50.0)

    def test_mean_length_of_utterance(self):
        # (7 + 3) words / 2 utterances.
        assert measure_markers(self.TEXT).mean_length_of_utterance == pytest.approx(5.0)

    def test_utterances_without_words_are_not_counted(self):
        # "..." alone and "!" leave empty pieces; 4 words in 2 utterances.
        assert measure_markers("the boy. ... ! the girl").mean_length_of_utterance == pytest.approx(2.0)


class TestLexicalRichness:
    def test_type_token_ratio(self):
        # the, boy, and, girl: 4 types / 5 tokens.
        assert type_token_ratio(tokenize("the boy and the girl")) == pytest.approx(0.8)

    def test_fillers_are_left_out_of_lexical_measures(self):
        # Words "the boy" only: 2 types / 2 tokens.
        assert measure_markers("uh the boy uh").type_token_ratio == pytest.approx(1.0)

    def test_mattr_averages_the_windows(self):
        # Windows "a b a" (2/3) and "b a c" (3/3): (2 + 3) / (2 * 3).
        assert moving_average_ttr(["a", "b", "a", "c"], window=3) == pytest.approx(5 / 6)

    def test_mattr_of_a_text_shorter_than_the_window_is_its_ttr(self):
        assert moving_average_ttr(["a", "a", "b"], window=50) == pytest.approx(2 / 3)

    def test_mattr_uses_the_window_of_fifty_by_default(self):
        # 60 words cycling through 10: every 50-word window has 10 types, so 10 / 50.
        text = " ".join(f"word{i % 10}" for i in range(60))
        assert measure_markers(text).mattr == pytest.approx(0.2)

    def test_brunet_w(self):
        # N = 3, V = 2: 3 ** (2 ** -0.165) = 3 ** 0.89193 = 2.6641.
        assert brunet_w(["a", "a", "b"]) == pytest.approx(3 ** (2 ** -0.165))
        assert brunet_w(["a", "a", "b"]) == pytest.approx(2.6641, abs=1e-4)

    def test_honore_r(self):
        # N = 3, V = 2, V1 = 1 ("b"): 100 ln 3 / (1 - 1/2) = 219.72.
        assert honore_r(["a", "a", "b"]) == pytest.approx(200 * math.log(3))
        # N = 4, V = 2, V1 = 0: 100 ln 4 / 1.
        assert honore_r(["a", "b", "a", "b"]) == pytest.approx(100 * math.log(4))

    def test_honore_r_is_undefined_when_every_word_is_said_once(self):
        assert honore_r(["a", "b", "c"]) is None
        assert measure_markers("the boy falls").honore_r is None


class TestUndefinedMarkers:
    def test_a_text_without_words_has_only_a_word_count(self):
        markers = measure_markers(" ... ")
        assert markers.words == 0
        assert all(getattr(markers, name) is None for name in MARKER_NAMES if name != "words")

    def test_a_text_of_fillers_has_rates_but_no_lexical_measures(self):
        markers = measure_markers("uh um")
        assert (markers.words, markers.fillers_per_100_words, markers.mean_length_of_utterance) == (2, 100.0, 2.0)
        assert (markers.type_token_ratio, markers.mattr, markers.brunet_w, markers.honore_r) == (None,) * 4


class TestSummariseMarkers:
    def test_mean_sd_median_and_quartiles(self):
        # Word counts 2, 4, 6, 8: mean 5; sd sqrt((9 + 1 + 1 + 9) / 3); quartiles by linear
        # interpolation at positions 0.75 and 2.25: 2 + 0.75 * 2 = 3.5 and 6 + 0.25 * 2 = 6.5.
        texts = ["a b", "a b c d", "a b c d e f", "a b c d e f g h"]
        words = summarise_markers([measure_markers(t) for t in texts]).markers["words"]
        assert words.n == 4
        assert words.mean == pytest.approx(5.0)
        assert words.sd == pytest.approx(math.sqrt(20 / 3))
        assert (words.median, words.q1, words.q3) == pytest.approx((5.0, 3.5, 6.5))

    def test_undefined_values_are_left_out(self):
        # Honoré's R: "a a b" gives 200 ln 3, "a b c" none.
        measured = [measure_markers("a a b"), measure_markers("a b c")]
        assert marker_values(measured, "honore_r") == pytest.approx([200 * math.log(3)])
        summary = summarise_markers(measured)
        assert summary.texts == 2
        assert summary.markers["honore_r"].n == 1
        assert summary.markers["honore_r"].mean == pytest.approx(200 * math.log(3))
        assert summary.markers["honore_r"].sd is None

    def test_an_empty_set(self):
        summary = summarise_markers([])
        assert summary.texts == 0
        assert summary.markers["words"].n == 0 and summary.markers["words"].mean is None

    def test_serialises_to_json(self):
        summary = summarise_markers([measure_markers("uh the boy the boy falls"), measure_markers("")])
        decoded = json.loads(json.dumps(summary.as_dict()))
        assert set(decoded["markers"]) == set(MARKER_NAMES)
        assert decoded["markers"]["words"]["mean"] == pytest.approx(3.0)
