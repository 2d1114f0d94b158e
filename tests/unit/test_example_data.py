"""The illustrative example data set keeps the promises made in examples/README.md."""

import csv
from collections import Counter
from pathlib import Path

from app.domain.markers import filler_rate, tokenize

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adress_illustrative.csv"
RUN_LENGTH = 8  # words in a run that counts as shared between two transcripts


def read_rows() -> list[dict[str, str]]:
    with EXAMPLE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def texts_with_label(label: str) -> list[str]:
    return [row["text"] for row in read_rows() if row["label"] == label]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The distinct runs of n consecutive (lower-cased) words in a text."""
    words = tokenize(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def texts_sharing_a_run(texts: list[str], n: int) -> int:
    """How many texts share at least one run of n words with some other text."""
    grams_per_text = [ngrams(text, n) for text in texts]
    texts_per_gram = Counter(gram for grams in grams_per_text for gram in grams)
    return sum(any(texts_per_gram[gram] > 1 for gram in grams) for grams in grams_per_text)


def longest_repeated_word_run(text: str) -> int:
    """The longest run of one word said again and again ("the the the" is 3)."""
    words = tokenize(text)
    longest = current = 1
    for previous, word in zip(words, words[1:]):
        current = current + 1 if word == previous else 1
        longest = max(longest, current)
    return longest


class TestShape:
    def test_columns(self):
        with EXAMPLE.open(newline="", encoding="utf-8") as f:
            assert next(csv.reader(f)) == ["id", "text", "label"]

    def test_120_rows_with_unique_ids(self):
        ids = [row["id"] for row in read_rows()]
        assert ids == [f"S{i:03d}" for i in range(1, 121)]

    def test_60_per_label(self):
        assert Counter(row["label"] for row in read_rows()) == {"0": 60, "1": 60}

    def test_labels_are_mixed_not_blocked(self):
        labels = "".join(row["label"] for row in read_rows())
        assert "00000" not in labels and "11111" not in labels
        assert "01010101" not in labels and "10101010" not in labels


class TestTexts:
    def test_every_text_has_40_to_110_words(self):
        lengths = {row["id"]: len(tokenize(row["text"])) for row in read_rows()}
        assert {i: n for i, n in lengths.items() if not 40 <= n <= 110} == {}

    def test_texts_are_single_line_ascii(self):
        bad = [row["id"] for row in read_rows() if not row["text"].isascii() or "\n" in row["text"]]
        assert bad == []


class TestMemorisationBaseline:
    def test_at_most_a_tenth_share_an_eight_word_run(self):
        texts = [row["text"] for row in read_rows()]
        assert texts_sharing_a_run(texts, RUN_LENGTH) <= len(texts) // 10

    def test_a_copied_run_is_counted(self):
        # The check itself can fail: two texts with a common 8-word run both count.
        copied = "the boy on the stool takes a cookie from the jar"
        texts = [f"First {copied} today.", f"Then {copied} again.", "Something else entirely said here."]
        assert texts_sharing_a_run(texts, RUN_LENGTH) == 2


class TestMarkers:
    def test_impaired_filler_rate_over_8_per_100_words(self):
        assert filler_rate(texts_with_label("1")) > 8

    def test_control_filler_rate_under_1_per_100_words(self):
        assert filler_rate(texts_with_label("0")) < 1

    def test_no_word_repeated_more_than_three_times_in_a_row(self):
        runs = {row["id"]: longest_repeated_word_run(row["text"]) for row in read_rows()}
        assert {i: n for i, n in runs.items() if n > 3} == {}

    def test_repeated_word_run_is_measured(self):
        assert longest_repeated_word_run("there's the the the boy, he he's up") == 3
