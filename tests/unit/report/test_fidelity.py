"""Label fidelity by both classifiers, beside held-out real text."""

from __future__ import annotations

import json

import pytest

from app.domain.report.fidelity import measure_label_fidelity
from app.domain.report.transcript import Transcript

CONTROL = ["the boy is on the stool", "the mother dries a plate", "water runs over the sink", "the girl wants a cookie"]
IMPAIRED = [f"uh {t} um uh" for t in CONTROL]
TRAIN = [Transcript(f"c{i}", t, "control", f"C{i}") for i, t in enumerate(CONTROL)] + [
    Transcript(f"i{i}", t, "impaired", f"I{i}") for i, t in enumerate(IMPAIRED)
]
SYNTHETIC = [
    Transcript("s1", "the stool is tipping over", "control"),
    Transcript("s2", "the curtains hang by the window", "control"),
    # Written for "control", full of the fillers that mark "impaired".
    Transcript("s3", "uh the curtains um uh hang um", "control"),
    Transcript("s4", "um the boy uh falls um uh", "impaired"),
]
HELD_OUT = [Transcript("h1", "the dishes are in the sink", "control", "H1")]


class TestMeasureLabelFidelity:
    def test_share_read_as_its_label_by_each_classifier(self):
        report = measure_label_fidelity(TRAIN, SYNTHETIC, HELD_OUT)
        for classifier in ("text", "markers"):
            # Control: s1 and s2 of 3; impaired: s4 of 1.
            assert report.synthetic[classifier] == {
                "control": {"n": 3, "share": pytest.approx(2 / 3)},
                "impaired": {"n": 1, "share": 1.0},
            }
            assert report.held_out[classifier] == {"control": {"n": 1, "share": 1.0}}

    def test_without_held_out_text(self):
        assert measure_label_fidelity(TRAIN, SYNTHETIC).held_out == {"text": {}, "markers": {}}

    def test_serialises_to_json(self):
        decoded = json.loads(json.dumps(measure_label_fidelity(TRAIN, SYNTHETIC, HELD_OUT).as_dict()))
        assert decoded["synthetic"]["markers"]["impaired"]["n"] == 1
