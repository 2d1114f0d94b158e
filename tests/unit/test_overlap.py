"""Longest shared word runs (suffix automaton) and near-duplicate lookup."""

from __future__ import annotations

import random

from app.domain.markers import tokenize
from app.domain.overlap import LongestMatchIndex, NearDuplicateIndex, shingles


def brute_force(query: list[str], documents: list[list[str]]) -> int:
    best = 0
    for doc in documents:
        for i in range(len(query)):
            for j in range(len(doc)):
                k = 0
                while i + k < len(query) and j + k < len(doc) and query[i + k] == doc[j + k]:
                    k += 1
                best = max(best, k)
    return best


class TestLongestMatch:
    def test_finds_the_longest_run_and_its_document(self):
        index = LongestMatchIndex([
            ("a", tokenize("The boy is on the stool, taking cookies.")),
            ("b", tokenize("The mother is drying the dishes at the sink.")),
        ])
        match = index.longest_match(tokenize("Look: the mother is drying the dishes, and the boy is on"))
        assert (match.words, match.document) == (6, "b")

    def test_no_shared_word_is_zero(self):
        index = LongestMatchIndex([("a", ["one", "two"])])
        assert index.longest_match(["three", "four"]).words == 0
        assert index.longest_match([]).document is None

    def test_a_run_never_spans_two_documents(self):
        index = LongestMatchIndex([("a", ["x", "y"]), ("b", ["z", "w"])])
        assert index.longest_match(["x", "y", "z", "w"]).words == 2

    def test_agrees_with_brute_force_on_random_texts(self):
        rng = random.Random(4)
        vocab = ["a", "b", "c", "d"]
        for _ in range(200):
            docs = [[rng.choice(vocab) for _ in range(rng.randint(0, 12))] for _ in range(rng.randint(1, 4))]
            query = [rng.choice(vocab) for _ in range(rng.randint(0, 12))]
            index = LongestMatchIndex(list(enumerate(docs)))
            match = index.longest_match(query)
            assert match.words == brute_force(query, docs)
            if match.words:
                run_found = any(
                    query[i : i + match.words] == docs[match.document][j : j + match.words]
                    for i in range(len(query)) for j in range(len(docs[match.document]))
                )
                assert run_found


class TestNearDuplicates:
    def test_exact_words_are_a_duplicate_whatever_the_punctuation(self):
        index: NearDuplicateIndex[str] = NearDuplicateIndex(0.7)
        index.add("s1", tokenize("Uh, the boy... the boy is on the stool."))
        found = index.find(tokenize("uh the boy the boy is on the stool"))
        assert (found.key, found.exact, found.similarity) == ("s1", True, 1.0)

    def test_near_duplicate_over_the_threshold_only(self):
        base = "the boy is on the stool and the girl wants a cookie while the mother dries a plate"
        index: NearDuplicateIndex[str] = NearDuplicateIndex(0.7)
        index.add("s1", tokenize(base))
        near = index.find(tokenize(base + " by the window"))
        assert near is not None and not near.exact and 0.7 <= near.similarity < 1.0
        assert index.find(tokenize("water is running over the sink onto the kitchen floor")) is None

    def test_the_most_similar_wins(self):
        index: NearDuplicateIndex[str] = NearDuplicateIndex(0.3)
        index.add("far", tokenize("a b c d e f g h"))
        index.add("near", tokenize("a b c d e f g x"))
        assert index.find(tokenize("a b c d e f g x y")).key == "near"

    def test_short_texts_are_one_shingle(self):
        assert shingles(["hi"]) == frozenset({("hi",)})
        assert shingles([]) == frozenset()
