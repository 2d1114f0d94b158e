"""Splits and the rules that keep held-out speech out of training.

Participants are grouped by ``participant_key`` and transcripts compared by ``transcript_key``, so
neither a second spelling of an id nor a second copy of a transcript can put one speaker in two
splits. Uploads are checked with these rules; ``find_leaks`` applies them to records already stored.
"""

import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

from app.domain.validation_report import Issue, ValidationReport

SPLITS = ("train", "validation", "test")
# A transcript this long is one speaker's: a copy of it in two splits is held-out speech in training.
# Shorter phrases ("I don't know") recur across speakers.
IDENTIFYING_WORDS = 10


class SplitRecord(Protocol):
    """What the split rules read: a parsed Record or a stored one."""

    row: int
    participant_id: str
    text: str
    label: str
    split: str | None


def participant_key(participant_id: str) -> str:
    """The form in which participant ids are compared: NFKC, case-folded, without surrounding blanks
    (whitespace or invisible format characters), inner whitespace runs as one space.

    'P01', ' p01' and the full-width 'Ｐ０１' are one participant. Records keep the id as written, so
    that exports and records join back to the user's own metadata; only grouping uses this key.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", participant_id).casefold())
    start, end = 0, len(folded)
    while start < end and _blank(folded[start]):
        start += 1
    while end > start and _blank(folded[end - 1]):
        end -= 1
    return " ".join(folded[start:end].split())


def _blank(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) == "Cf"


def transcript_key(text: str) -> str:
    """The form in which transcripts are compared: NFKC, case-folded, the words alone (punctuation and
    whitespace ignored)."""
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def find_leaks(train: Iterable[SplitRecord], held_out: Iterable[SplitRecord]) -> list[Issue]:
    """The errors by which held-out speech would reach training: a participant, or a transcript of
    IDENTIFYING_WORDS words or more, among ``train`` and among ``held_out`` (validation, test) records."""
    train, held_out = list(train), list(held_out)
    report = ValidationReport()
    for split in dict.fromkeys(r.split for r in held_out):
        records = train + [r for r in held_out if r.split == split]
        for rows in _by_participant(records).values():
            _check_one_split(rows, report)
        check_transcripts(records, report)
    return report.errors


def _by_participant(records: Iterable[SplitRecord]) -> dict[str, list[SplitRecord]]:
    by_participant: dict[str, list[SplitRecord]] = defaultdict(list)
    for record in records:
        by_participant[participant_key(record.participant_id)].append(record)
    return by_participant


def _at(record: SplitRecord) -> str:
    """Where a record is, as messages write it: 'on line 8', or 'in train/cc/S001.cha' for a file's record."""
    source = getattr(record, "source", None)
    return f"in {source}" if source else f"on line {record.row}"


def _name(record: SplitRecord) -> str:
    """A record as messages name it: 'line 8', or its file's path."""
    source = getattr(record, "source", None)
    return source or f"line {record.row}"


def _located(record: SplitRecord) -> dict:
    """The issue fields that locate a record: its line, or the file it was read from."""
    source = getattr(record, "source", None)
    return {"file": source} if source else {"row": record.row}


def _written(first: SplitRecord, other: SplitRecord) -> str:
    """How ``other`` spells the participant, when ``first`` spells it differently."""
    if other.participant_id == first.participant_id:
        return ""
    return (f" (written {other.participant_id!r} there; ids are compared ignoring case, character width "
            "and surrounding spaces)")


def check_participants(records: list[SplitRecord], report: ValidationReport) -> None:
    """One label and one split per participant: real test speech must never reach training."""
    for rows in _by_participant(records).values():
        first = rows[0]
        spelling = next((r for r in rows if r.participant_id != first.participant_id), None)
        if spelling:
            report.warn(
                "participant_spelling",
                f"participant {first.participant_id} {_at(first)} is written {spelling.participant_id!r} "
                f"{_at(spelling)}; ids are compared ignoring case, character width and surrounding "
                "spaces, so these rows are one participant (each row keeps the id as written)",
                participant=spelling.participant_id, **_located(spelling),
            )
        other = next((r for r in rows if r.label != first.label), None)
        if other:
            report.error(
                "label_conflict",
                f"participant {first.participant_id} is labelled '{first.label}' {_at(first)} "
                f"and '{other.label}' {_at(other)}{_written(first, other)}; a participant has one label",
                participant=other.participant_id, **_located(other),
            )
        _check_one_split(rows, report)


def _check_one_split(rows: list[SplitRecord], report: ValidationReport) -> None:
    first = rows[0]
    other = next((r for r in rows if r.split != first.split), None)
    if other:
        report.error(
            "participant_in_two_splits",
            f"participant {first.participant_id} is in '{first.split}' {_at(first)} and in "
            f"'{other.split}' {_at(other)}{_written(first, other)}; keep each participant in one split",
            participant=other.participant_id, **_located(other),
        )


def _same_transcripts(records: Iterable[SplitRecord]) -> dict[str, list[SplitRecord]]:
    """Groups of two or more records with the same transcript_key, in file order."""
    by_text: dict[str, list[SplitRecord]] = defaultdict(list)
    for record in records:
        by_text[transcript_key(record.text)].append(record)
    return {key: rows for key, rows in by_text.items() if len(rows) > 1}


def _identifying(key: str) -> bool:
    """Long enough to be one speaker's transcript; shorter phrases ("I don't know") recur across speakers."""
    return len(key.split()) >= IDENTIFYING_WORDS


def check_transcripts(records: list[SplitRecord], report: ValidationReport) -> None:
    """The same transcript in two splits is held-out speech in training (refused unless it is too short
    to identify anyone); in one split, a warning naming the rows and any second participant."""
    for key, rows in _same_transcripts(records).items():
        first = rows[0]
        other = next((r for r in rows if r.split != first.split), None)
        if other and _identifying(key):
            report.error(
                "text_in_two_splits",
                f"{_name(first)} (participant {first.participant_id}, '{first.split}') and {_name(other)} "
                f"(participant {other.participant_id}, '{other.split}') have the same text (compared ignoring "
                "case, punctuation and spacing); one transcript in two splits puts held-out speech into "
                "training: remove the copy or keep both rows in one split",
                participant=other.participant_id, **_located(other),
            )
            continue
        lines = ", ".join(getattr(r, "source", None) or str(r.row) for r in rows)
        noun = "files" if getattr(first, "source", None) else "lines"
        participants = list(dict.fromkeys(r.participant_id for r in rows))
        splits = list(dict.fromkeys(r.split for r in rows))
        whose = f" (participants {', '.join(participants)})" if len(participants) > 1 else ""
        where = (f" in splits {', '.join(repr(s) for s in splits)}, allowed because it has under "
                 f"{IDENTIFYING_WORDS} words" if len(splits) > 1 else "")
        report.warn("duplicate_text", f"{noun} {lines} have the same text{whose}{where}",
                    participant=rows[1].participant_id, **_located(rows[1]))


def assign_splits(records: list[SplitRecord], seed: int, ratios: tuple[float, float, float]) -> None:
    """Split by participant, stratified by label, so no participant straddles two splits; participants
    that share a transcript (one speaker under two ids, most likely) are kept together."""
    rng = random.Random(seed)
    unit_of = _assignment_units(records)
    label_of_participant = {participant_key(r.participant_id): r.label for r in records}
    # A unit is named by its smallest participant key; its label is that participant's.
    label_of = {unit: label_of_participant[unit] for unit in unit_of.values()}
    split_of: dict[str, str] = {}
    for label in sorted(set(label_of.values())):
        # Sorted first so the result depends on the seed, not on the file's row order.
        units = sorted(u for u, l in label_of.items() if l == label)
        rng.shuffle(units)
        n_validation, n_test = _held_out_counts(len(units), ratios)
        for i, unit in enumerate(units):
            split_of[unit] = ("validation" if i < n_validation
                              else "test" if i < n_validation + n_test else "train")
    for record in records:
        record.split = split_of[unit_of[participant_key(record.participant_id)]]


def _assignment_units(records: list[SplitRecord]) -> dict[str, str]:
    """Each participant key's unit: the smallest key among the participants it shares identifying
    transcripts with, directly or through others."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for text, rows in _same_transcripts(records).items():
        if not _identifying(text):
            continue
        keys = sorted({participant_key(r.participant_id) for r in rows})
        for other in keys[1:]:
            a, b = root(keys[0]), root(other)
            parent[max(a, b)] = min(a, b)
    return {key: root(key) for key in (participant_key(r.participant_id) for r in records)}


def _held_out_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int]:
    """Validation and test sizes; with 3+ participants each gets one and train keeps one."""
    validation, test = (int(n * ratio + 0.5) for ratio in ratios[1:])
    if n >= 3:
        validation, test = max(1, validation), max(1, test)
        while validation + test > n - 1:
            if validation >= test:
                validation -= 1
            else:
                test -= 1
    return validation, test
