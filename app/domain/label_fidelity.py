"""Label fidelity: whether a synthetic sample reads as the label it was generated for, judged by
classifiers trained on the real train split.

Two classifiers that look at different things: word n-grams (TF-IDF + logistic regression), which
the label-consistency post-filter uses, and a handful of linguistic markers of impaired speech,
which the filter never sees, so a corpus the filter cleaned can still be judged independently.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from app.domain.markers import FILLERS, count_repetitions, tokenize

# Empty words that stand in for the one the speaker cannot find.
VAGUE_WORDS = frozenset({"thing", "things", "stuff", "something", "whatchamacallit", "whatsit", "thingy"})


class LabelClassifier(Protocol):
    def predict(self, texts: Sequence[str]) -> list[str]: ...


class TextLabelClassifier:
    """TF-IDF over word 1-2 grams (fillers kept) and a class-balanced logistic regression."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        _check_labels(labels)
        self._model = make_pipeline(
            TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(max_iter=1000, class_weight="balanced"),
        )
        self._model.fit(list(texts), list(labels))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(label) for label in self._model.predict(list(texts))] if texts else []

    def predict_proba(self, texts: Sequence[str], label: str) -> list[float]:
        """The probability of ``label`` for each text."""
        return _probabilities(self._model, list(texts), label)


class MarkerLabelClassifier:
    """Logistic regression on standardised markers: fillers, repetitions, pauses and vague words per
    100 words, type-token ratio and length."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        _check_labels(labels)
        self._model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
        self._model.fit([marker_features(t) for t in texts], list(labels))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(label) for label in self._model.predict([marker_features(t) for t in texts])] if texts else []

    def predict_proba(self, texts: Sequence[str], label: str) -> list[float]:
        """The probability of ``label`` for each text."""
        return _probabilities(self._model, [marker_features(t) for t in texts], label)


def marker_features(text: str) -> list[float]:
    """[fillers, repetitions, pauses, vague words per 100 words, type-token ratio, words]."""
    words = tokenize(text)
    per_100 = 100.0 / len(words) if words else 0.0
    return [
        sum(w in FILLERS for w in words) * per_100,
        count_repetitions(text) * per_100,
        text.count("...") * per_100,
        sum(w in VAGUE_WORDS for w in words) * per_100,
        len(set(words)) / len(words) if words else 0.0,
        float(len(words)),
    ]


def label_fidelity(
    classifier: LabelClassifier, synthetic: Sequence[tuple[str, str]]
) -> dict[str, dict[str, float | int]]:
    """Per label of the (label, text) synthetic samples: how many, and the share read as that label."""
    predicted = classifier.predict([t for _, t in synthetic])
    result: dict[str, dict[str, float | int]] = {}
    for label in sorted({label for label, _ in synthetic}):
        hits = [p == label for (l, _), p in zip(synthetic, predicted) if l == label]
        result[label] = {"n": len(hits), "share": sum(hits) / len(hits)}
    return result


def _probabilities(model, rows: list, label: str) -> list[float]:
    classes = [str(c) for c in model.classes_]
    if label not in classes:
        raise ValueError(f"label {label!r} is not one the classifier was trained on ({', '.join(classes)})")
    return [float(p) for p in model.predict_proba(rows)[:, classes.index(label)]] if rows else []


def _check_labels(labels: Sequence[str]) -> None:
    if len(set(labels)) < 2:
        raise ValueError("a label classifier needs real texts of at least two labels")
