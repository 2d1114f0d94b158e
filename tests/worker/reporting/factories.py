"""Corpus reports for the reporting tests: the trimmed example report and variants of it."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).parent / "report.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_report() -> dict:
    """A report computed on the example data, trimmed (a few values, points and examples per label)."""
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def without_utility(report: dict) -> dict:
    report["utility"] = {"skipped": "the test split has no 'impaired' participants"}
    report["headline"]["test_f1"] = {}
    report["headline"]["utility_skipped"] = report["utility"]["skipped"]
    return report


def without_semantic(report: dict) -> dict:
    report["semantic"] = {"skipped": "no embedding model"}
    for entry in report["headline"]["labels"].values():
        entry["frechet_distance"] = None
    return report


def without_samples(report: dict, label: str) -> dict:
    """The report as built for a label none of whose candidates was drawn or kept: None wherever undefined."""
    report["counts"][label].update(drawn=0, accepted=0)
    markers = report["markers"][label]
    markers["synthetic"] = {"texts": 0, "markers": {
        name: {"n": 0, "mean": None, "sd": None, "median": None, "q1": None, "q3": None}
        for name in markers["real"]["markers"]}}
    markers["distances"] = None
    markers["values"]["synthetic"] = []
    report["completeness"][label] = {
        "drawn": 0, "ended_share": None, "cut_share": None, "degenerate_share": None, "rejected_degenerate": 0,
        "longest_run": {"real_max": report["completeness"][label]["longest_run"]["real_max"], "drawn_max": None,
                        "drawn_median": None, "kept_max": None},
        "drawn_runs": []}
    report["diversity"][label]["synthetic"] = {"texts": 0, "distinct_1": None, "distinct_2": None,
                                               "distinct_3": None, "self_bleu": None, "self_bleu_texts": 0}
    report["semantic"]["by_label"][label]["synthetic"] = None
    report["semantic"]["map"] = [p for p in report["semantic"]["map"]
                                 if not (p["label"] == label and p["origin"] == "synthetic")]
    for by_label in report["fidelity"]["synthetic"].values():
        by_label.pop(label, None)
    report["memorization"]["worst_by_words"] = [e for e in report["memorization"]["worst_by_words"]
                                                if e["label"] != label]
    report["headline"]["labels"][label] = {
        "accepted": 0, "ended_on_their_own": None, "degenerate": None,
        "fillers_per_100_words": {"real": report["headline"]["labels"][label]["fillers_per_100_words"]["real"],
                                  "synthetic": None},
        "read_as_label": {name: None for name in report["fidelity"]["synthetic"]}, "frechet_distance": None}
    return report


def with_undefined_markers(report: dict, label: str) -> dict:
    """Texts too short to define some markers: their values are None."""
    for row in report["markers"][label]["values"]["synthetic"]:
        row.update(mattr=None, brunet_w=None, honore_r=None)
    return report


def with_sample_text(report: dict, text: str) -> dict:
    report["memorization"]["worst_by_words"][0]["sample_text"] = text
    return report


def without_context(report: dict) -> dict:
    """A report built without provenance, data set or training records."""
    for key in ("corpus_id", "dataset_id", "generations", "adapters", "dataset", "training", "computed_at"):
        report.pop(key, None)
    return report
