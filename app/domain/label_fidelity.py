"""Label fidelity: the share of synthetic samples that a classifier trained on the real train split
assigns to the label they were generated for."""

from __future__ import annotations

from typing import Sequence

from app.domain.markers import tokenize


class TextLabelClassifier:
    """TF-IDF over word 1-2 grams (fillers kept) and a class-balanced logistic regression."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        if len(set(labels)) < 2:
            raise ValueError("a label classifier needs real texts of at least two labels")
        self._model = make_pipeline(
            TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2), sublinear_tf=True),
            LogisticRegression(max_iter=1000, class_weight="balanced"),
        )
        self._model.fit(list(texts), list(labels))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(label) for label in self._model.predict(list(texts))] if texts else []


def label_fidelity(
    real: Sequence[tuple[str, str]], synthetic: Sequence[tuple[str, str]]
) -> dict[str, dict[str, float | int]]:
    """Per label of the (label, text) synthetic samples: how many, and the share read as that label."""
    classifier = TextLabelClassifier([t for _, t in real], [label for label, _ in real])
    predicted = classifier.predict([t for _, t in synthetic])
    result: dict[str, dict[str, float | int]] = {}
    for label in sorted({label for label, _ in synthetic}):
        hits = [p == label for (l, _), p in zip(synthetic, predicted) if l == label]
        result[label] = {"n": len(hits), "share": sum(hits) / len(hits)}
    return result
