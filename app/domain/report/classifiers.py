"""The label classifiers the report trains on real text, by the name results carry."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from app.domain.label_fidelity import MarkerLabelClassifier, TextLabelClassifier


class ScoringClassifier(Protocol):
    def predict(self, texts: Sequence[str]) -> list[str]: ...

    def predict_proba(self, texts: Sequence[str], label: str) -> list[float]: ...


# Trained from (texts, labels); word n-grams and linguistic markers judge a text by different things.
ClassifierFactory = Callable[[Sequence[str], Sequence[str]], ScoringClassifier]
CLASSIFIERS: dict[str, ClassifierFactory] = {"text": TextLabelClassifier, "markers": MarkerLabelClassifier}
