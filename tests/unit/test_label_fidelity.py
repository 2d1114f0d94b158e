"""Label classifiers of real text: the probability they give a label."""

from __future__ import annotations

import pytest

from app.domain.label_fidelity import MarkerLabelClassifier, TextLabelClassifier

TEXTS = [
    "the boy is on the stool", "the mother dries a plate", "water runs over the sink",
    "uh the girl um wants uh a cookie", "um the stool uh is um tipping", "uh uh the curtains um hang",
]
LABELS = ["control"] * 3 + ["impaired"] * 3


@pytest.mark.parametrize("classifier_class", [TextLabelClassifier, MarkerLabelClassifier])
class TestPredictProba:
    def test_the_two_labels_share_the_probability(self, classifier_class):
        classifier = classifier_class(TEXTS, LABELS)
        texts = ["uh the boy um falls", "the boy falls"]
        impaired = classifier.predict_proba(texts, "impaired")
        control = classifier.predict_proba(texts, "control")
        assert [i + c for i, c in zip(impaired, control)] == pytest.approx([1.0, 1.0])

    def test_agrees_with_predict(self, classifier_class):
        # Fillers mark the impaired texts only: the text full of them is the more likely impaired.
        classifier = classifier_class(TEXTS, LABELS)
        texts = ["uh the boy um uh falls um", "the boy falls off the stool"]
        impaired = classifier.predict_proba(texts, "impaired")
        assert impaired[0] > 0.5 > impaired[1]
        assert classifier.predict(texts) == ["impaired", "control"]

    def test_no_texts(self, classifier_class):
        assert classifier_class(TEXTS, LABELS).predict_proba([], "impaired") == []

    def test_an_unknown_label_is_refused(self, classifier_class):
        with pytest.raises(ValueError, match="mci"):
            classifier_class(TEXTS, LABELS).predict_proba(["the boy"], "mci")
