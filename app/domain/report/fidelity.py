"""Label fidelity of a synthetic corpus by each classifier, beside the same classifier on held-out real text."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from app.domain.label_fidelity import label_fidelity
from app.domain.report.classifiers import CLASSIFIERS, ClassifierFactory
from app.domain.report.transcript import Transcript


@dataclass(frozen=True)
class FidelityReport:
    """Per classifier and label: {"n", "share"}, the share of texts read as their own label.

    ``held_out`` is how often the same classifier reads real held-out transcripts right: a synthetic
    share near it is as faithful as real speech can show, not a defect.
    """

    synthetic: dict[str, dict[str, dict[str, float | int]]]
    held_out: dict[str, dict[str, dict[str, float | int]]]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_label_fidelity(
    train: Sequence[Transcript],
    synthetic: Sequence[Transcript],
    held_out: Sequence[Transcript] = (),
    classifiers: Mapping[str, ClassifierFactory] = CLASSIFIERS,
) -> FidelityReport:
    """Train each classifier on the real train split and read the synthetic and held-out texts with it."""
    synthetic_result, held_out_result = {}, {}
    for name, factory in classifiers.items():
        classifier = factory([t.text for t in train], [t.label for t in train])
        synthetic_result[name] = label_fidelity(classifier, [(t.label, t.text) for t in synthetic])
        held_out_result[name] = label_fidelity(classifier, [(t.label, t.text) for t in held_out])
    return FidelityReport(synthetic_result, held_out_result)
