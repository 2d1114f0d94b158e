"""The evidence stored with a corpus: its synthetic samples against the real train split, per label.

``build_report`` is pure: the caller loads the texts and passes an ``embed`` function (sentence
embeddings), so the whole report is computed the same way by a worker, the CLI and the tests. The
result is plain JSON, stored as it is and rendered into the HTML page.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from app.domain.degeneration import longest_repeat
from app.domain.markers import tokenize
from app.domain.report.distances import compare_markers, frechet_distance
from app.domain.report.diversity import measure_diversity
from app.domain.report.fidelity import measure_label_fidelity
from app.domain.report.markers import MARKER_NAMES, measure_markers, summarise_markers
from app.domain.report.memorization import measure_memorization
from app.domain.report.transcript import Transcript
from app.domain.report.utility import measure_utility

REPORT_VERSION = 1
POSITIVE_LABEL = "impaired"
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Drawn:
    """A drawn candidate, kept or not: how it ended and whether the post-filters rejected it."""

    label: str
    text: str
    finish_reason: str | None
    reject_reason: str | None


@dataclass
class ReportInputs:
    """The real splits, the corpus's accepted samples and every candidate drawn for it."""

    labels: Sequence[str]
    train: Sequence[Transcript]
    validation: Sequence[Transcript]
    test: Sequence[Transcript]
    synthetic: Sequence[Transcript]
    drawn: Sequence[Drawn]
    context: dict[str, Any] = field(default_factory=dict)  # provenance, data set report, training curve


def build_report(inputs: ReportInputs, embed: Embed | None = None, *, seed: int = 0, resamples: int = 1000) -> dict:
    """Every section of the report as JSON-ready data; ``embed`` None leaves out the embedding measures."""
    labels = list(inputs.labels)
    held_out = [*inputs.validation, *inputs.test]
    embeddings = _embed_all(inputs, embed) if embed is not None else None
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "labels": labels,
        "counts": _counts(inputs, labels),
        "markers": {label: _markers(inputs, label) for label in labels},
        "completeness": {label: _completeness(inputs, label) for label in labels},
        "diversity": {label: _diversity(inputs, label, seed) for label in labels},
        "semantic": _semantic(inputs, labels, embeddings),
        "memorization": _memorization(inputs, held_out, embeddings),
        "fidelity": measure_label_fidelity(inputs.train, inputs.synthetic, held_out).as_dict(),
        "utility": _utility(inputs, labels, seed, resamples),
        **inputs.context,
    }
    report["headline"] = headline(report)
    return report


def headline(report: dict) -> dict:
    """The figures a reader checks first, per label and overall."""
    per_label = {}
    for label in report["labels"]:
        markers = report["markers"][label]
        completeness = report["completeness"][label]
        per_label[label] = {
            "accepted": report["counts"][label]["accepted"],
            "ended_on_their_own": completeness["ended_share"],
            "degenerate": completeness["degenerate_share"],
            "fillers_per_100_words": {origin: _mean(markers[origin], "fillers_per_100_words")
                                      for origin in ("real", "synthetic")},
            "read_as_label": {name: by_label.get(label, {}).get("share")
                              for name, by_label in report["fidelity"]["synthetic"].items()},
            "frechet_distance": report["semantic"].get("by_label", {}).get(label, {}).get("synthetic"),
        }
    memorization = report["memorization"]
    utility = report["utility"]
    f1 = {}
    if utility.get("results"):
        for result in utility["results"]:
            f1.setdefault(result["classifier"], {})[result["arm"]] = result["metrics"]["f1"]["value"]
    return {
        "labels": per_label,
        "memorized_share": {"synthetic": memorization["synthetic"]["share_words_at_or_above"],
                            "held_out_real": memorization["held_out"]["share_words_at_or_above"],
                            "words_threshold": memorization["words_threshold"]},
        "test_f1": f1,
        "utility_skipped": utility.get("skipped"),
    }


def _mean(summary: dict, marker: str) -> float | None:
    return summary["markers"][marker]["mean"] if summary["markers"].get(marker) else None


def _of(texts: Sequence[Transcript], label: str) -> list[Transcript]:
    return [t for t in texts if t.label == label]


def _counts(inputs: ReportInputs, labels: list[str]) -> dict:
    return {label: {"train": len(_of(inputs.train, label)), "validation": len(_of(inputs.validation, label)),
                    "test": len(_of(inputs.test, label)), "drawn": sum(d.label == label for d in inputs.drawn),
                    "accepted": len(_of(inputs.synthetic, label))} for label in labels}


def _markers(inputs: ReportInputs, label: str) -> dict:
    real = [measure_markers(t.text) for t in _of(inputs.train, label)]
    synthetic = [measure_markers(t.text) for t in _of(inputs.synthetic, label)]
    return {
        "real": summarise_markers(real).as_dict(),
        "synthetic": summarise_markers(synthetic).as_dict(),
        "distances": compare_markers(synthetic, real).as_dict() if synthetic and real else None,
        # Per text, for the distribution charts.
        "values": {"real": [_values(m) for m in real], "synthetic": [_values(m) for m in synthetic]},
    }


def _values(measured) -> dict:
    return {name: getattr(measured, name) for name in MARKER_NAMES}


def _completeness(inputs: ReportInputs, label: str) -> dict:
    """How drawn candidates ended and looped, against the longest loop in the label's real train texts."""
    drawn = [d for d in inputs.drawn if d.label == label]
    real_runs = [longest_repeat(tokenize(t.text)).count for t in _of(inputs.train, label)]
    drawn_runs = [longest_repeat(tokenize(d.text)).count for d in drawn]
    real_max = max(real_runs, default=1)
    n = len(drawn)
    return {
        "drawn": n,
        "ended_share": _share(sum(d.finish_reason == "stop" for d in drawn), n),
        "cut_share": _share(sum(d.finish_reason == "length" for d in drawn), n),
        "degenerate_share": _share(sum(run > real_max for run in drawn_runs), n),
        "rejected_degenerate": sum(d.reject_reason == "degenerate" for d in drawn),
        "longest_run": {
            "real_max": real_max,
            "drawn_max": max(drawn_runs, default=None),
            "drawn_median": statistics.median(drawn_runs) if drawn_runs else None,
            "kept_max": max((longest_repeat(tokenize(t.text)).count for t in _of(inputs.synthetic, label)),
                            default=None),
        },
        "drawn_runs": drawn_runs,
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _diversity(inputs: ReportInputs, label: str, seed: int) -> dict:
    return {"real": measure_diversity([t.text for t in _of(inputs.train, label)], seed=seed).as_dict(),
            "synthetic": measure_diversity([t.text for t in _of(inputs.synthetic, label)], seed=seed).as_dict()}


def _embed_all(inputs: ReportInputs, embed: Embed) -> dict[str, np.ndarray]:
    return {name: np.asarray(embed([t.text for t in texts])) if texts else np.zeros((0, 0))
            for name, texts in (("train", inputs.train), ("synthetic", inputs.synthetic),
                                ("held_out", [*inputs.validation, *inputs.test]))}


def _semantic(inputs: ReportInputs, labels: list[str], embeddings: dict | None) -> dict:
    """Fréchet distance of synthetic and of held-out real embeddings to the train embeddings, per label,
    and a 2-D PCA map of all of them."""
    if embeddings is None:
        return {"skipped": "no embedding model"}
    held_out = [*inputs.validation, *inputs.test]
    by_label = {}
    for label in labels:
        train = _rows(embeddings["train"], inputs.train, label)
        by_label[label] = {"synthetic": _frechet(_rows(embeddings["synthetic"], inputs.synthetic, label), train),
                           "held_out_real": _frechet(_rows(embeddings["held_out"], held_out, label), train)}
    return {"distance": "frechet", "by_label": by_label, "map": _pca_map(inputs, embeddings)}


def _rows(matrix: np.ndarray, texts: Sequence[Transcript], label: str) -> np.ndarray:
    return matrix[[i for i, t in enumerate(texts) if t.label == label]] if len(texts) else matrix


def _frechet(a: np.ndarray, b: np.ndarray) -> float | None:
    return frechet_distance(a, b) if len(a) >= 2 and len(b) >= 2 else None


def _pca_map(inputs: ReportInputs, embeddings: dict[str, np.ndarray]) -> list[dict]:
    """Every text's first two principal components (fitted on the real train texts)."""
    train = embeddings["train"]
    if len(train) < 3:
        return []
    mean = train.mean(axis=0)
    _, _, components = np.linalg.svd(train - mean, full_matrices=False)
    points = []
    for origin, key, texts in (("real train", "train", inputs.train), ("synthetic", "synthetic", inputs.synthetic),
                               ("real held-out", "held_out", [*inputs.validation, *inputs.test])):
        if texts:
            xy = (embeddings[key] - mean) @ components[:2].T
            points += [{"x": round(float(x), 4), "y": round(float(y), 4), "label": t.label, "origin": origin}
                       for (x, y), t in zip(xy, texts)]
    return points


def _memorization(inputs: ReportInputs, held_out: list[Transcript], embeddings: dict | None) -> dict:
    kwargs = {}
    if embeddings is not None:
        kwargs = {"synthetic_embeddings": embeddings["synthetic"] if inputs.synthetic else None,
                  "train_embeddings": embeddings["train"],
                  "held_out_embeddings": embeddings["held_out"] if held_out else None}
    return measure_memorization(inputs.synthetic, inputs.train, held_out, **kwargs).as_dict()


def _utility(inputs: ReportInputs, labels: list[str], seed: int, resamples: int) -> dict:
    """Classifiers scored on the real test split only: validation and test never train anything here."""
    missing = [label for label in labels if not _of(inputs.test, label)]
    if POSITIVE_LABEL not in labels or missing or not inputs.synthetic:
        reason = ("the corpus has no accepted samples" if not inputs.synthetic
                  else f"the test split has no '{missing[0]}' participants" if missing
                  else f"no '{POSITIVE_LABEL}' label")
        return {"skipped": reason}
    return measure_utility(inputs.train, inputs.synthetic, inputs.test, positive=POSITIVE_LABEL,
                           seed=seed, resamples=resamples).as_dict()
