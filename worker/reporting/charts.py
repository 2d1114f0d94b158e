"""The corpus report's charts, each a PNG as bytes (None where the report holds nothing to draw).

Figures are built on an explicit Agg canvas, never through pyplot: no display, no global backend
switch, and safe in a worker thread. Missing values (a label without accepted samples, a marker a
text does not define) leave a panel empty with a note instead of raising.
"""

from __future__ import annotations

import io
import math
from typing import Any, Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 100
# The markers whose real and synthetic distributions tell the most apart (type-token ratio is left
# out: MATTR measures the same without its dependence on length).
MARKER_TITLES = {
    "words": "words",
    "fillers_per_100_words": "fillers / 100 words",
    "word_repetitions_per_100_words": "word repetitions / 100 words",
    "phrase_repetitions_per_100_words": "phrase repetitions / 100 words",
    "pronouns_per_100_words": "pronouns / 100 words",
    "type_token_ratio": "type-token ratio",
    "mattr": "MATTR",
    "brunet_w": "Brunét's W",
    "honore_r": "Honoré's R",
    "mean_length_of_utterance": "mean length of utterance",
}
# The markers that tell real from synthetic best; type-token ratio is left out of the chart because
# MATTR measures the same without its dependence on text length.
CHART_MARKERS = tuple(name for name in MARKER_TITLES if name != "type_token_ratio")
ORIGIN_COLOURS = {"real": "#4C72B0", "synthetic": "#DD8452"}
LABEL_COLOURS = ("#4C72B0", "#C44E52", "#55A868", "#8172B3", "#937860", "#DA8BC3")
MAP_MARKERS = {"real train": "o", "synthetic": "x", "real held-out": "^"}
ARM_COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#8172B3")
UTILITY_METRICS = {"f1": "F1", "roc_auc": "ROC AUC"}
LOOP_OK, LOOP_DEGENERATE = "#4C72B0", "#C44E52"
# What each chart shows, for its alt text.
CHART_ALT = {
    "chart-markers": "Boxplots of each linguistic marker, real train texts beside synthetic samples, per label",
    "chart-loops": "Drawn samples per longest repeated run, per label, against the longest run in real train texts",
    "chart-embedding-map": "PCA map of sentence embeddings, coloured by label, marked by real train, synthetic "
                           "or real held-out",
    "chart-utility": "Test F1 and ROC AUC of each classifier per training arm, with bootstrap intervals",
    "chart-training": "Validation loss of the fine-tune per epoch",
}


def draw_charts(report: dict) -> dict[str, bytes]:
    """Every chart the report has data for, by the id its ``<img>`` gets on the page."""
    drawn = {
        "chart-markers": plot_markers(report),
        "chart-loops": plot_loops(report),
        "chart-embedding-map": plot_embedding_map(report),
        "chart-utility": plot_utility(report),
        "chart-training": plot_training(report),
    }
    return {chart_id: png for chart_id, png in drawn.items() if png is not None}


def plot_markers(report: dict) -> bytes | None:
    """Boxplots of each marker, real train beside synthetic, per label; one panel per marker."""
    labels = list(report.get("labels") or [])
    markers = report.get("markers") or {}
    if not labels:
        return None
    columns = 3
    rows = math.ceil(len(CHART_MARKERS) / columns)
    fig = Figure(figsize=(10, 2.6 * rows), dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, marker in zip(axes, CHART_MARKERS):
        ax.set_title(MARKER_TITLES[marker], fontsize=10)
        drew = False
        for i, label in enumerate(labels):
            values = (markers.get(label) or {}).get("values") or {}
            for offset, origin in ((-0.2, "real"), (0.2, "synthetic")):
                points = _finite(row.get(marker) for row in values.get(origin) or [] if row)
                if points:
                    _box(ax, points, i + offset, ORIGIN_COLOURS[origin])
                    drew = True
        ax.set_xticks(range(len(labels)), labels, fontsize=9)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.tick_params(axis="y", labelsize=8)
        if not drew:
            _note(ax, "no values")
    for ax in axes[len(CHART_MARKERS):]:
        ax.set_visible(False)
    fig.legend(handles=[_patch(colour, origin) for origin, colour in
                        (("real train", ORIGIN_COLOURS["real"]), ("synthetic", ORIGIN_COLOURS["synthetic"]))],
               loc="upper center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _png(fig)


def plot_embedding_map(report: dict) -> bytes | None:
    """The PCA map of the sentence embeddings: colour by label, marker by origin."""
    points = [p for p in (report.get("semantic") or {}).get("map") or []
              if p and _is_number(p.get("x")) and _is_number(p.get("y"))]
    if not points:
        return None
    labels = _ordered(report.get("labels") or [], (p.get("label") for p in points))
    colours = {label: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, label in enumerate(labels)}
    fig = Figure(figsize=(7, 5.5), dpi=DPI)
    ax = fig.subplots()
    for origin, marker in MAP_MARKERS.items():
        for label in labels:
            group = [p for p in points if p.get("origin") == origin and p.get("label") == label]
            if group:
                # Real train points hollow, so synthetic crosses on top of them stay visible.
                paint = ({"facecolors": "none", "edgecolors": colours[label]} if marker == "o"
                         else {"color": colours[label]})
                ax.scatter([p["x"] for p in group], [p["y"] for p in group], s=28, marker=marker,
                           linewidths=1.2, alpha=0.8, **paint)
    ax.set_xlabel("first principal component (real train)")
    ax.set_ylabel("second principal component")
    handles = [_patch(colour, label) for label, colour in colours.items()]
    handles += [Line2D([], [], color="#444444", marker=marker, linestyle="none", label=origin,
                       markerfacecolor="none" if marker == "o" else "#444444")
                for origin, marker in MAP_MARKERS.items() if any(p.get("origin") == origin for p in points)]
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    return _png(fig)


def plot_utility(report: dict) -> bytes | None:
    """Test F1 and ROC AUC of each classifier per arm, with their bootstrap intervals; None when skipped."""
    results = [r for r in (report.get("utility") or {}).get("results") or [] if r]
    if not results:
        return None
    classifiers = _ordered([], (r.get("classifier") for r in results))
    arms = _ordered([], (r.get("arm") for r in results))
    fig = Figure(figsize=(9, 3.6), dpi=DPI)
    axes = fig.subplots(1, len(UTILITY_METRICS), squeeze=False).ravel()
    width = 0.7 / max(len(arms), 1)
    for ax, (metric, title) in zip(axes, UTILITY_METRICS.items()):
        ax.set_title(f"test {title}", fontsize=10)
        for j, arm in enumerate(arms):
            for i, classifier in enumerate(classifiers):
                estimate = _estimate(results, classifier, arm, metric)
                if estimate is None:
                    continue
                value, low, high = estimate
                x = i + (j - (len(arms) - 1) / 2) * width
                errors = [[max(value - low, 0.0)], [max(high - value, 0.0)]] if low is not None else None
                ax.errorbar([x], [value], yerr=errors, fmt="o", color=ARM_COLOURS[j % len(ARM_COLOURS)],
                            capsize=4, markersize=6)
        ax.set_xticks(range(len(classifiers)), classifiers)
        ax.set_xlim(-0.6, len(classifiers) - 0.4)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=[_patch(ARM_COLOURS[j % len(ARM_COLOURS)], arm) for j, arm in enumerate(arms)],
               loc="upper center", ncol=len(arms), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _png(fig)


def plot_loops(report: dict) -> bytes | None:
    """How many drawn samples reach each longest repeated run, per label; runs beyond the real max in red."""
    labels = list(report.get("labels") or [])
    completeness = report.get("completeness") or {}
    if not labels:
        return None
    columns = min(len(labels), 3)
    fig = Figure(figsize=(4.2 * columns, 3.2 * math.ceil(len(labels) / columns)), dpi=DPI)
    axes = fig.subplots(math.ceil(len(labels) / columns), columns, squeeze=False).ravel()
    for ax, label in zip(axes, labels):
        entry = completeness.get(label) or {}
        runs = [int(run) for run in _finite(entry.get("drawn_runs") or [])]
        real_max = (entry.get("longest_run") or {}).get("real_max")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("longest repeated run (times)")
        ax.set_ylabel("drawn samples")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not runs:
            _note(ax, "no samples drawn")
            continue
        # Run lengths up to one past the real max, so the threshold shows even when no sample reaches it.
        top = max(max(runs), int(real_max) + 1) if _is_number(real_max) else max(runs)
        lengths = list(range(min(runs), top + 1))
        counts = [runs.count(n) for n in lengths]
        colours = [LOOP_DEGENERATE if _is_number(real_max) and n > real_max else LOOP_OK for n in lengths]
        ax.bar(lengths, counts, color=colours, width=0.8)
        if _is_number(real_max):
            ax.axvline(real_max + 0.5, color="#333333", linestyle="--", linewidth=1)
            ax.text(real_max + 0.55, max(counts), f"real max {real_max:g}", fontsize=8, va="top")
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def plot_training(report: dict) -> bytes | None:
    """Each fine-tune's validation loss per epoch; None when the report has no such curve."""
    curves = [(name, points) for name, points in training_curves(report) if points]
    if not curves:
        return None
    fig = Figure(figsize=(6, 3.2), dpi=DPI)
    ax = fig.subplots()
    for i, (name, points) in enumerate(curves):
        ax.plot([e for e, _ in points], [loss for _, loss in points], marker="o", label=name,
                color=LABEL_COLOURS[i % len(LABEL_COLOURS)])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def training_curves(report: dict) -> list[tuple[str, list[tuple[float, float]]]]:
    """(adapter or job name, sorted (epoch, loss) points) of each training record in the report.

    ``training`` is one record or a list of them (one per adapter the corpus was sampled from).
    """
    training = report.get("training")
    records = training if isinstance(training, list) else [training] if isinstance(training, dict) else []
    curves = []
    for i, record in enumerate(r for r in records if isinstance(r, dict)):
        curve = record.get("eval_loss")
        points = sorted((p["epoch"], p["loss"]) for p in curve if isinstance(p, dict)
                        and _is_number(p.get("epoch")) and _is_number(p.get("loss"))) if isinstance(curve, list) else []
        curves.append((str(record.get("adapter_id") or record.get("job_id") or f"run {i + 1}"), points))
    return curves


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No Software chunk (it names the matplotlib version): the same report gives the same bytes.
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _box(ax, points: list[float], position: float, colour: str) -> None:
    ax.boxplot([points], positions=[position], widths=0.32, patch_artist=True, manage_ticks=False,
               boxprops={"facecolor": colour, "alpha": 0.6, "edgecolor": colour},
               medianprops={"color": "#222222"}, whiskerprops={"color": colour}, capprops={"color": colour},
               flierprops={"marker": ".", "markeredgecolor": colour, "markersize": 4})


def _estimate(results: list[dict], classifier: str, arm: str, metric: str) -> tuple | None:
    """(value, low, high) of one metric, low and high None without an interval; None without a value."""
    for result in results:
        if result.get("classifier") == classifier and result.get("arm") == arm:
            estimate = (result.get("metrics") or {}).get(metric) or {}
            value, low, high = estimate.get("value"), estimate.get("low"), estimate.get("high")
            if not _is_number(value):
                return None
            return (value, low, high) if _is_number(low) and _is_number(high) else (value, None, None)
    return None


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888")


def _patch(colour: str, label: str) -> Line2D:
    return Line2D([], [], color=colour, marker="s", linestyle="none", markersize=9, label=label)


def _ordered(first: Iterable[Any], seen: Iterable[Any]) -> list:
    """``first`` then whatever else ``seen`` holds, in order of appearance, without None or repeats."""
    ordered: list = []
    for item in (*first, *seen):
        if item is not None and item not in ordered:
            ordered.append(item)
    return ordered


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if _is_number(v)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
