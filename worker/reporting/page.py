"""The corpus report as one self-contained HTML page, and the files a corpus keeps it in.

Everything the page shows is prepared here as sections of formatted tables and charts, so the
template only lays them out. The page loads nothing: CSS is inline, charts are PNG data URIs, and
every text from the report (sample texts are user data) is escaped by the template engine.
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined

from app.services.reports import HTML_NAME, JSON_NAME
from worker.reporting.charts import CHART_ALT, MARKER_TITLES, draw_charts, training_curves

NONE = "–"
ARMS_ORDER = ("real", "real+1x", "real+2x")
EXPLAIN = {
    "headline": "The figures to check first; each is explained in its section below.",
    "markers": "Linguistic markers per transcript, real train texts against synthetic samples of the same label. "
               "Scaled Wasserstein is the distance between the two distributions in real standard deviations "
               "(0 is identical); the KS statistic is the largest gap between their cumulative distributions "
               "(0 identical, 1 disjoint).",
    "completeness": "How drawn samples ended: on their own or cut at the length limit, and whether they looped. "
                    "A sample whose longest repeated run exceeds the longest in any real train text of its "
                    "label counts as degenerate.",
    "diversity": "Distinct-n is the share of unique n-grams across a set (higher is more varied); self-BLEU is how "
                 "much each text resembles the others (lower is more varied). Synthetic values near the real "
                 "ones mean the model neither collapsed onto a few phrasings nor rambled.",
    "semantic": "Fréchet distance from a set's sentence embeddings to the real train texts', as FID does for "
                "images. Held-out real speakers give the baseline: a synthetic distance near theirs is as close "
                "as new real speech.",
    "memorization": "How much of each text one training transcript contains: the longest shared run of words and "
                    "the highest cosine similarity. Held-out real speakers overlap with train this much by "
                    "nature; synthetic samples well above that copy training speech.",
    "fidelity": "The share of texts that classifiers trained on the real train split read as their own label. "
                "The held-out real share is how well a classifier reads real speech; a synthetic share near it "
                "is as faithful as can be shown.",
    "utility": "Classifiers trained on the real train split alone, then with synthetic samples 1x and 2x its size, "
               "scored per participant on the real test split. A gain whose interval stays above 0 is an "
               "improvement; one whose interval spans 0 is not shown to be.",
    "dataset": "What validating the uploaded data set found, and the fine-tune's loss on the validation split "
               "per epoch: falling then flattening is healthy, rising means the model overfits.",
    "provenance": "Where this report comes from.",
}
PROVENANCE = {"corpus_id": "corpus", "dataset_id": "data set", "dataset_name": "data set name",
              "adapter_id": "adapter", "base_model": "base model", "embedding_model": "embedding model",
              "computed_at": "computed at", "version": "report version"}


def render_page(report: dict) -> str:
    """The whole report as one HTML page."""
    charts = {chart_id: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
              for chart_id, png in draw_charts(report).items()}
    sections = [
        _section("headline", "Headline figures", _headline_tables(report)),
        _section("markers", "1 Linguistic markers", _marker_tables(report), charts, ["chart-markers"]),
        _section("completeness", "2 Degeneration and completeness", _completeness_tables(report), charts,
                 ["chart-loops"]),
        _section("diversity", "3 Diversity", _diversity_tables(report)),
        _semantic_section(report, charts),
        _section("memorization", "5 Memorization", _memorization_tables(report)),
        _section("fidelity", "6 Label fidelity", _fidelity_tables(report)),
        _utility_section(report, charts),
        _dataset_section(report, charts),
        _section("provenance", "Provenance", _provenance_tables(report)),
    ]
    return _environment().get_template("report.html.j2").render(
        title=f"Corpus report {report.get('corpus_id') or ''}".strip(), sections=sections)


def write_report_files(report: dict, directory: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory``; a reader never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    html = render_page(report)
    json_path = _write_atomically(directory / JSON_NAME, json.dumps(report, indent=1, ensure_ascii=False))
    html_path = _write_atomically(directory / HTML_NAME, html)
    return json_path, html_path


@cache
def _environment() -> Environment:
    # autoescape is on for the .j2 name too (select_autoescape would not match it).
    return Environment(loader=PackageLoader("worker.reporting", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _write_atomically(path: Path, text: str) -> Path:
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         delete=False)
    temporary = Path(handle.name)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # Temporary files are private (0600); the report is read by whoever serves the artifacts.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _section(key: str, title: str, tables: list[dict], charts: dict[str, str] | None = None,
             chart_ids: Sequence[str] = (), notes: Sequence[str] = ()) -> dict:
    charts = charts or {}
    shown = [{"id": chart_id, "alt": CHART_ALT[chart_id], "uri": charts.get(chart_id)} for chart_id in chart_ids]
    return {"id": key, "title": title, "explain": EXPLAIN[key], "tables": tables, "charts": shown,
            "notes": list(notes)}


def _table(head: list[str], rows: list[list[Any]], caption: str | None = None, wide: tuple[int, ...] = ()) -> dict:
    """A table of cells already formatted as text; ``wide`` columns hold long texts."""
    return {"caption": caption, "head": head, "rows": rows, "wide": set(wide)}


def _headline_tables(report: dict) -> list[dict]:
    headline = report.get("headline") or {}
    per_label = headline.get("labels") or {}
    classifiers = sorted({name for entry in per_label.values() for name in (entry.get("read_as_label") or {})})
    baseline = (report.get("semantic") or {}).get("by_label") or {}
    rows = []
    for label, entry in per_label.items():
        fillers = entry.get("fillers_per_100_words") or {}
        read_as = entry.get("read_as_label") or {}
        rows.append([label, _number(entry.get("accepted")), _share(entry.get("ended_on_their_own")),
                     _share(entry.get("degenerate")),
                     f"{_number(fillers.get('real'))} → {_number(fillers.get('synthetic'))}",
                     *(_share(read_as.get(name)) for name in classifiers), _number(entry.get("frechet_distance")),
                     _number(_dig(baseline, label, "held_out_real"))])
    tables = [_table(["label", "accepted", "ended on their own", "degenerate", "fillers / 100 words real → synthetic",
                      *(f"read as label ({name})" for name in classifiers), "Fréchet distance",
                      "Fréchet held-out real"], rows)]
    memorized = headline.get("memorized_share") or {}
    tables.append(_table(["", "synthetic", "held-out real"],
                         [[f"memorized (≥ {_number(memorized.get('words_threshold'))} shared words)",
                           _share(memorized.get("synthetic")), _share(memorized.get("held_out_real"))]]))
    f1 = headline.get("test_f1") or {}
    if headline.get("utility_skipped"):
        tables.append(_table(["test F1"], [[f"not measured: {headline['utility_skipped']}"]]))
    elif f1:
        arms = _arms(arm for by_arm in f1.values() for arm in by_arm)
        tables.append(_table(["test F1", *arms], [[name, *(_metric(by_arm.get(arm)) for arm in arms)]
                                                  for name, by_arm in f1.items()]))
    return tables


def _marker_tables(report: dict) -> list[dict]:
    tables = []
    for label in report.get("labels") or []:
        entry = _dig(report, "markers", label) or {}
        real, synthetic = _dig(entry, "real", "markers") or {}, _dig(entry, "synthetic", "markers") or {}
        distances = {d.get("marker"): d for d in _dig(entry, "distances", "markers") or []}
        rows = [[MARKER_TITLES.get(name, name), _mean_sd(real.get(name)), _mean_sd(synthetic.get(name)),
                 _number(_dig(distances, name, "scaled_wasserstein")), _number(_dig(distances, name, "ks_statistic"))]
                for name in _ordered_keys(MARKER_TITLES, real, synthetic)]
        tables.append(_table(["marker", "real mean ± sd", "synthetic mean ± sd", "scaled Wasserstein", "KS statistic"],
                             rows, caption=label))
    return tables


def _completeness_tables(report: dict) -> list[dict]:
    rows = []
    for label in report.get("labels") or []:
        entry = _dig(report, "completeness", label) or {}
        rows.append([label, _number(entry.get("drawn")),
                     *(_share(entry.get(key)) for key in ("ended_share", "cut_share", "degenerate_share")),
                     _number(entry.get("rejected_degenerate")),
                     *(_number(_dig(entry, "longest_run", key)) for key in ("real_max", "drawn_max", "drawn_median",
                                                                             "kept_max"))])
    return [_table(["label", "drawn", "ended on their own", "cut at length", "degenerate", "rejected as degenerate",
                    "longest run: real max", "drawn max", "drawn median", "kept max"], rows)]


def _diversity_tables(report: dict) -> list[dict]:
    rows = []
    for label in report.get("labels") or []:
        for origin, name in (("real", "real train"), ("synthetic", "synthetic")):
            measured = _dig(report, "diversity", label, origin) or {}
            rows.append([label, name, *(_number(measured.get(key)) for key in ("texts", "distinct_1", "distinct_2",
                                                                                "distinct_3", "self_bleu"))])
    return [_table(["label", "set", "texts", "distinct-1", "distinct-2", "distinct-3", "self-BLEU"], rows)]


def _semantic_section(report: dict, charts: dict[str, str]) -> dict:
    semantic = report.get("semantic") or {}
    if semantic.get("skipped"):
        return _section("semantic", "4 Semantic closeness", [], notes=[f"Not measured: {semantic['skipped']}."])
    rows = [[label, _number(_dig(semantic, "by_label", label, "synthetic")),
             _number(_dig(semantic, "by_label", label, "held_out_real"))] for label in report.get("labels") or []]
    table = _table(["label", "synthetic", "held-out real (baseline)"], rows, caption="Fréchet distance to real train")
    return _section("semantic", "4 Semantic closeness", [table], charts, ["chart-embedding-map"])


def _memorization_tables(report: dict) -> list[dict]:
    memorization = report.get("memorization") or {}
    synthetic, held_out = memorization.get("synthetic") or {}, memorization.get("held_out") or {}
    words, cosine = _number(memorization.get("words_threshold")), _number(memorization.get("cosine_threshold"))
    measures = (("texts", "n", _number), (f"share with ≥ {words} shared words", "share_words_at_or_above", _share),
                ("mean shared words", "mean_words", _number), ("median shared words", "median_words", _number),
                ("95th percentile shared words", "p95_words", _number), ("most shared words", "max_words", _number),
                (f"share with cosine ≥ {cosine}", "share_cosine_at_or_above", _share),
                ("mean cosine", "mean_cosine", _number), ("median cosine", "median_cosine", _number),
                ("highest cosine", "max_cosine", _number))
    tables = [_table(["", "synthetic", "held-out real (baseline)"],
                     [[name, show(synthetic.get(key)), show(held_out.get(key))] for name, key, show in measures])]
    for key, caption in (("worst_by_words", "closest by shared words"), ("worst_by_cosine", "closest by cosine")):
        examples = memorization.get(key) or []
        if examples:
            rows = [[e.get("label") or NONE, e.get("sample_text") or NONE, e.get("real_text") or NONE,
                     e.get("participant") or NONE, _number(e.get("words")), _number(e.get("cosine"))]
                    for e in examples]
            tables.append(_table(["label", "synthetic sample", "nearest real train text", "participant", "words",
                                  "cosine"], rows, caption=caption, wide=(1, 2)))
    return tables


def _fidelity_tables(report: dict) -> list[dict]:
    fidelity = report.get("fidelity") or {}
    synthetic, held_out = fidelity.get("synthetic") or {}, fidelity.get("held_out") or {}
    rows = []
    for name in _ordered_keys({}, synthetic, held_out):
        for label in report.get("labels") or []:
            rows.append([name, label, _share_of(_dig(synthetic, name, label)), _share_of(_dig(held_out, name, label))])
    return [_table(["classifier", "label", "synthetic read as label", "held-out real read as label"], rows)]


def _utility_section(report: dict, charts: dict[str, str]) -> dict:
    utility = report.get("utility") or {}
    if utility.get("skipped") or not utility.get("results"):
        reason = utility.get("skipped") or "no results"
        return _section("utility", "7 Augmentation utility", [], notes=[f"Not measured: {reason}."])
    rows = []
    for result in utility["results"]:
        metrics, gain = result.get("metrics") or {}, result.get("gain") or {}
        synthetic_rows = result.get("synthetic_rows") or {}
        rows.append([result.get("classifier") or NONE, result.get("arm") or NONE, _plain(synthetic_rows),
                     *(_interval(metrics.get(key)) for key in ("f1", "roc_auc", "accuracy")),
                     *(_interval(gain.get(key), signed=True) if gain else NONE for key in ("f1", "roc_auc"))])
    table = _table(["classifier", "arm", "synthetic rows", "F1", "ROC AUC", "accuracy", "F1 gain", "ROC AUC gain"],
                   rows)
    confidence = utility.get("confidence")
    note = (f"Positive label {utility.get('positive_label') or NONE}; {_number(utility.get('train_rows'))} real train "
            f"rows, {_number(utility.get('synthetic_available'))} synthetic samples available, "
            f"{_number(utility.get('test_participants'))} test participants; intervals "
            f"{_share(confidence)} over {_number(utility.get('resamples'))} bootstrap resamples.")
    return _section("utility", "7 Augmentation utility", [table], charts, ["chart-utility"], notes=[note])


def _dataset_section(report: dict, charts: dict[str, str]) -> dict:
    dataset = report.get("dataset") or {}
    # The worker stores the data set's id and name beside its validation report; a bare validation
    # report is read the same.
    validation = dataset.get("report") if isinstance(dataset.get("report"), dict) else dataset
    tables, notes = [], []
    if validation.get("stats"):
        stats = [[key, _plain(value)] for key, value in validation["stats"].items()]
        tables.append(_table(["statistic", "value"], stats, caption="data set statistics"))
    issues = [*(validation.get("errors") or []), *(validation.get("warnings") or [])]
    if issues:
        tables.append(_table(["level", "code", "message", "row", "participant"],
                             [[i.get("level") or NONE, i.get("code") or NONE, i.get("message") or NONE,
                               _number(i.get("row")), i.get("participant") or NONE] for i in issues],
                             caption="validation issues", wide=(2,)))
    elif validation:
        notes.append("Validation found no issues.")
    else:
        notes.append("The report holds no validation report of the data set.")
    curves = training_curves(report)
    if curves:
        rows = [[name, _number(len(points)), *(_number(loss) for loss in _losses(points))]
                for name, points in curves]
        tables.append(_table(["fine-tune", "evaluations", "first validation loss", "last", "lowest"], rows,
                             caption="validation loss"))
    else:
        notes.append("The report holds no training record.")
    chart_ids = ["chart-training"] if any(points for _, points in curves) else []
    return _section("dataset", "8 Data set and training", tables, charts, chart_ids, notes=notes)


def _losses(points: list[tuple[float, float]]) -> tuple:
    losses = [loss for _, loss in points]
    return (losses[0], losses[-1], min(losses)) if losses else (None, None, None)


def _provenance_tables(report: dict) -> list[dict]:
    dataset = report.get("dataset") or {}
    facts = {key: dataset.get("name") if key == "dataset_name" else report.get(key) for key in PROVENANCE}
    rows = [[PROVENANCE[key], _plain(value)] for key, value in facts.items() if value is not None]
    tables = [_table(["", "value"], rows)] if rows else []
    adapters = [a if isinstance(a, dict) else {"id": a} for a in report.get("adapters") or []]
    if adapters:
        tables.append(_table(["adapter", "fine-tune job", "base model", "method"],
                             [[_plain(a.get(key)) for key in ("id", "job_id", "base_model", "method")]
                              for a in adapters], caption="adapters"))
    generations = [g for g in report.get("generations") or [] if isinstance(g, dict)]
    if generations:
        keys = ("id", "adapter_id", "status", "sampler", "accepted", "candidates", "rejected")
        tables.append(_table(["generation", "adapter", "status", "sampler", "accepted", "drawn", "rejected"],
                             [[_plain(g.get(key)) for key in keys] for g in generations], caption="generations"))
    counts = report.get("counts") or {}
    if counts:
        splits = ("train", "validation", "test", "drawn", "accepted")
        tables.append(_table(["label", *splits], [[label, *(_number(_dig(counts, label, s)) for s in splits)]
                                                  for label in report.get("labels") or counts], caption="texts"))
    return tables


def _arms(arms: Iterable[str]) -> list[str]:
    """Arms in their natural order (real first), unknown ones after."""
    seen = list(dict.fromkeys(arms))
    return [arm for arm in ARMS_ORDER if arm in seen] + [arm for arm in seen if arm not in ARMS_ORDER]


def _ordered_keys(first: Iterable[str], *mappings: dict) -> list:
    """The keys of ``mappings``, those in ``first`` first and in its order."""
    present = list(dict.fromkeys(key for mapping in mappings for key in mapping))
    return [key for key in first if key in present] + [key for key in present if key not in first]


def _dig(value: Any, *keys: str) -> Any:
    """``value[key][key]…``, None where a level is missing or not a mapping."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> str:
    """Three significant digits; thousands whole; integers as they are."""
    if not _is_number(value):
        return NONE
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _share(value: Any) -> str:
    return f"{value * 100:.3g}%" if _is_number(value) else NONE


def _share_of(entry: dict | None) -> str:
    return f"{_share(entry.get('share'))} of {_number(entry.get('n'))}" if entry else NONE


def _metric(value: Any, signed: bool = False) -> str:
    if not _is_number(value):
        return NONE
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _interval(estimate: dict | None, signed: bool = False) -> str:
    """value [low, high]; the value alone where the interval is undefined."""
    if not estimate or not _is_number(estimate.get("value")):
        return NONE
    value = _metric(estimate["value"], signed)
    if _is_number(estimate.get("low")) and _is_number(estimate.get("high")):
        return f"{value} [{_metric(estimate['low'], signed)}, {_metric(estimate['high'], signed)}]"
    return value


def _mean_sd(summary: dict | None) -> str:
    if not summary or not _is_number(summary.get("mean")):
        return NONE
    mean = _number(summary["mean"])
    return f"{mean} ± {_number(summary['sd'])}" if _is_number(summary.get("sd")) else mean


def _plain(value: Any) -> str:
    """Any JSON value as one line: numbers formatted, mappings as 'key value' pairs."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items()) or NONE
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value) or NONE
    return str(value)
