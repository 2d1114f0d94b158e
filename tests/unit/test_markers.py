import pytest

from app.domain.markers import (
    FILLERS,
    count_fillers,
    count_repetitions,
    count_words,
    filler_rate,
    fillers_per_100_words,
    repetition_rate,
    summarise,
    tokenize,
)


class TestTokenize:
    def test_drops_punctuation_and_pauses(self):
        assert tokenize("The boy... he's on the stool, uh, falling!") == [
            "the", "boy", "he's", "on", "the", "stool", "uh", "falling",
        ]

    def test_normalises_chat_fillers(self):
        assert tokenize("&-uh the &um boy &uh") == ["uh", "the", "um", "boy", "uh"]


class TestCountWords:
    def test_counts_fillers_as_words(self):
        assert count_words("Um, the boy is, uh, on the stool.") == 8

    def test_empty_text_has_no_words(self):
        assert count_words("  ... ") == 0


class TestCountFillers:
    @pytest.mark.parametrize("filler", sorted(FILLERS))
    def test_every_filler_counts(self, filler):
        assert count_fillers(f"the {filler} boy") == 1

    @pytest.mark.parametrize("chat", ["&uh", "&um", "&-uh", "&-um"])
    def test_chat_fillers_count(self, chat):
        assert count_fillers(f"the boy {chat} takes a cookie") == 1

    def test_case_and_punctuation_do_not_matter(self):
        assert count_fillers("Uh... UM, hmm? er.") == 4

    def test_words_containing_fillers_do_not_count(self):
        assert count_fillers("umbrella under the hummingbird") == 0


class TestFillersPer100Words:
    def test_rate(self):
        assert fillers_per_100_words("uh the boy um takes") == pytest.approx(40.0)

    def test_no_words_is_zero(self):
        assert fillers_per_100_words("") == 0.0


class TestFillerRate:
    def test_pools_words_across_texts(self):
        # 1 filler over 2 + 8 words; a mean of per-text rates would give 25.
        texts = ["uh boy", "the mother is drying the dishes at the"]
        assert filler_rate(texts) == pytest.approx(10.0)

    def test_no_texts_is_zero(self):
        assert filler_rate([]) == 0.0

    def test_accepts_a_generator(self):
        assert filler_rate(t for t in ["um um", "boy girl"]) == pytest.approx(50.0)


class TestRepetitionRate:
    def test_counts_immediate_repetitions(self):
        assert count_repetitions("the the boy is is on the stool") == 2
        assert repetition_rate("the the boy is is on the stool") == pytest.approx(25.0)

    def test_pause_between_repeats_still_counts(self):
        assert count_repetitions("the... the cookie") == 1

    def test_sentence_boundary_is_no_repetition(self):
        assert count_repetitions("She has not reacted at all. All in all, chaos.") == 0

    def test_repeated_fillers_are_not_repetitions(self):
        assert count_repetitions("uh uh the boy") == 0

    def test_no_words_is_zero(self):
        assert repetition_rate("") == 0.0


class TestSummarise:
    def test_summary(self):
        summary = summarise(["uh the the boy", "the girl reaches up"])
        assert summary == {
            "n": 2,
            "mean_words": 4.0,
            "fillers_per_100_words": pytest.approx(12.5),
            "repetitions_per_100_words": pytest.approx(12.5),
        }

    def test_empty(self):
        assert summarise([]) == {
            "n": 0, "mean_words": 0.0, "fillers_per_100_words": 0.0, "repetitions_per_100_words": 0.0,
        }
