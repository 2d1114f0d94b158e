"""What every reader produces (Records), the label mapping of tabular files, and the checks and statistics
that apply to a whole upload whatever its format."""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from app.domain.markers import count_words
from app.domain.splits import SPLITS, participant_key
from app.domain.validation_report import ValidationReport

LABELS = ("control", "impaired")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}

MAX_PARTICIPANT_CHARS = 200  # records.participant_id is VARCHAR(200)
NUL = "\x00"  # Postgres text cannot hold one; refused on SQLite too, so an upload means the same on both
SHORT_TEXT_WORDS = 10
LONG_TEXT_WORDS = 1500
IMBALANCE_RATIO = 0.67


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns hold what, and how raw label values map onto canonical labels."""

    participant: str = "id"
    text: str = "text"
    label: str = "label"
    split: str = "split"
    label_values: Mapping[str, str] = field(
        default_factory=lambda: {"0": "control", "1": "impaired"}
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.label_values.values()) - set(LABELS))
        if unknown:
            raise ValueError(f"label_values map onto unknown labels {unknown}; use {LABELS}")

    def canonical_label(self, raw: str) -> str | None:
        """The canonical label for a raw value (stripped, case-insensitive), or None."""
        key = raw.strip().lower()
        for value, label in self.label_values.items():
            if value.strip().lower() == key:
                return label
        # Files that already use the canonical names need no mapping.
        return key if key in LABELS else None

    def accepted_labels(self) -> list[str]:
        """Every raw label value this mapping accepts."""
        return list(dict.fromkeys([*self.label_values, *LABELS]))


@dataclass
class Record:
    """One validated transcript; participant_id is kept as written (see participant_key).

    ``row`` is the line of a table row, or the position of a CHAT file among the upload's .cha files
    (sorted by path); ``source`` is that file's path, None for table rows.
    """

    row: int
    participant_id: str
    text: str
    label: str
    split: str | None
    source: str | None = None


def warn_about_length(record: Record, report: ValidationReport, **where) -> None:
    """Warn about a transcript too short to learn from or long enough to be several."""
    words = count_words(record.text)
    who = f" (participant {record.participant_id})"
    prefix = f"line {record.row}: " if record.source is None else f"{record.source}: "
    if words < SHORT_TEXT_WORDS:
        report.warn("short_text", f"{prefix}the text has only {words} words{who}",
                    participant=record.participant_id, **where)
    elif words > LONG_TEXT_WORDS:
        report.warn("long_text", f"{prefix}the text has {words} words, over {LONG_TEXT_WORDS}{who}",
                    participant=record.participant_id, **where)


def check_labels(records: list[Record], report: ValidationReport) -> None:
    """Every label needs training records; a strong imbalance is worth a warning."""
    if not records:
        return
    counts = {label: sum(r.label == label for r in records) for label in LABELS}
    for label in LABELS:
        if not any(r.label == label and r.split == "train" for r in records):
            report.error(
                "missing_label",
                f"no training records are labelled '{label}'; label-conditioned training "
                f"needs training records of every label ({', '.join(LABELS)})",
            )
    minority, majority = min(counts.values()), max(counts.values())
    if minority and minority / majority < IMBALANCE_RATIO:
        report.warn(
            "class_imbalance",
            "labels are imbalanced: " + ", ".join(f"{n} {label}" for label, n in counts.items()) + " records",
        )


def _summary(values: list[int], with_p95: bool = False) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    summary = {"min": ordered[0], "mean": sum(ordered) / len(ordered), "max": ordered[-1]}
    if with_p95:
        # Nearest-rank percentile: always one of the observed lengths.
        summary["p95"] = ordered[math.ceil(0.95 * len(ordered)) - 1]
    return summary


def statistics(records: list[Record], count_tokens: Callable[[str], int] | None) -> dict:
    """Counts per label and split, and word (and token) lengths."""
    stats = {
        "records": len(records),
        "participants": len({participant_key(r.participant_id) for r in records}),
        "labels": {label: sum(r.label == label for r in records) for label in LABELS},
        "splits": {split: sum(r.split == split for r in records) for split in SPLITS},
        "label_splits": {
            label: {split: sum(r.label == label and r.split == split for r in records) for split in SPLITS}
            for label in LABELS
        },
        "words": _summary([count_words(r.text) for r in records]),
    }
    if count_tokens is not None:
        stats["tokens"] = _summary([count_tokens(r.text) for r in records], with_p95=True)
    return stats
