"""Word-level overlap between texts: longest shared word run against a reference set, near duplicates.

Both work on the word tokens of ``app.domain.markers.tokenize`` (lower case, punctuation dropped), so
"The boy, the stool" and "the boy the stool" are the same four words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Generic, Hashable, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Match(Generic[K]):
    """The longest run of words a text shares with one reference document, and which document."""

    words: int
    document: K | None


class LongestMatchIndex(Generic[K]):
    """Longest common word run between a query and any one of a fixed set of documents.

    A suffix automaton over all documents, each closed by a separator of its own so no match spans
    two documents; a query costs time linear in its length, whatever the number of documents.
    """

    def __init__(self, documents: Sequence[tuple[K, Sequence[str]]]) -> None:
        self._vocab: dict[str, int] = {}
        self._next: list[dict[int, int]] = [{}]
        self._link: list[int] = [-1]
        self._len: list[int] = [0]
        self._doc: list[int] = [-1]
        self._keys: list[K] = []
        for position, (key, tokens) in enumerate(documents):
            self._keys.append(key)
            last = 0
            for token in tokens:
                last = self._extend(last, self._vocab.setdefault(token, len(self._vocab)), position)
            self._extend(last, -(position + 1), position)

    def longest_match(self, tokens: Sequence[str]) -> Match[K]:
        """The longest run of ``tokens`` that occurs word for word in one document."""
        state = length = best = 0
        best_doc = -1
        for token in tokens:
            symbol = self._vocab.get(token)
            if symbol is None:
                state = length = 0
                continue
            while state and symbol not in self._next[state]:
                state = self._link[state]
                length = self._len[state]
            if symbol in self._next[state]:
                state = self._next[state][symbol]
                length += 1
            else:
                state = length = 0
            if length > best:
                best, best_doc = length, self._doc[state]
        return Match(best, self._keys[best_doc] if best_doc >= 0 else None)

    def _extend(self, last: int, symbol: int, doc: int) -> int:
        current = self._new_state(self._len[last] + 1, {}, -1, doc)
        state = last
        while state != -1 and symbol not in self._next[state]:
            self._next[state][symbol] = current
            state = self._link[state]
        if state == -1:
            self._link[current] = 0
            return current
        target = self._next[state][symbol]
        if self._len[state] + 1 == self._len[target]:
            self._link[current] = target
            return current
        clone = self._new_state(self._len[state] + 1, dict(self._next[target]), self._link[target], self._doc[target])
        while state != -1 and self._next[state].get(symbol) == target:
            self._next[state][symbol] = clone
            state = self._link[state]
        self._link[target] = self._link[current] = clone
        return current

    def _new_state(self, length: int, transitions: dict[int, int], link: int, doc: int) -> int:
        self._len.append(length)
        self._next.append(transitions)
        self._link.append(link)
        self._doc.append(doc)
        return len(self._len) - 1


def shingles(tokens: Sequence[str], size: int = 3) -> frozenset[tuple[str, ...]]:
    """Word n-grams of a text; a text shorter than ``size`` is one shingle of itself."""
    if len(tokens) < size:
        return frozenset({tuple(tokens)}) if tokens else frozenset()
    return frozenset(tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1))


@dataclass(frozen=True)
class Duplicate(Generic[K]):
    """The most similar indexed text and its word-trigram Jaccard similarity; exact when the words are equal."""

    key: K
    similarity: float
    exact: bool


class NearDuplicateIndex(Generic[K]):
    """Texts seen so far, found again by exact words or by word-trigram Jaccard similarity."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._exact: dict[tuple[str, ...], K] = {}
        self._shingles: dict[K, frozenset[tuple[str, ...]]] = {}
        self._postings: dict[tuple[str, ...], list[K]] = {}

    def __len__(self) -> int:
        return len(self._shingles)

    def add(self, key: K, tokens: Sequence[str]) -> None:
        self._exact.setdefault(tuple(tokens), key)
        grams = shingles(tokens)
        self._shingles[key] = grams
        for gram in grams:
            self._postings.setdefault(gram, []).append(key)

    def find(self, tokens: Sequence[str]) -> Duplicate[K] | None:
        """The closest indexed text at or above the threshold, or None."""
        exact = self._exact.get(tuple(tokens))
        if exact is not None:
            return Duplicate(exact, 1.0, True)
        grams = shingles(tokens)
        shared: Counter[K] = Counter()
        for gram in grams:
            shared.update(self._postings.get(gram, ()))
        best: Duplicate[K] | None = None
        for key, common in shared.items():
            similarity = common / (len(grams) + len(self._shingles[key]) - common)
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Duplicate(key, similarity, False)
        return best
