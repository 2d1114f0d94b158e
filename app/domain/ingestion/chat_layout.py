"""What a CHAT corpus says outside its transcripts: labels and splits from folder names, the participant
from the file name, and what the ``@ID`` group field means.

Pitt (DementiaBank) names a visit ``<participant>-<visit>.cha`` in ``Control/`` and ``Dementia/``;
ADReSS names ``S<participant>.cha`` in ``train/cc``, ``train/cd`` and ``test/``.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from app.domain.chat_transcripts import RenderOptions
from app.domain.ingestion.records import LABELS, SPLIT_ALIASES

DEFAULT_LABEL_MAP = {"cc": "control", "cd": "impaired", "Control": "control", "Dementia": "impaired"}
# Searched in the file's base name: '001-0.cha' and '001-2.cha' are visits 0 and 2 of participant 001,
# 'S001.cha' is S001 (and a transcript uploaded as 'S001.txt' too).
DEFAULT_PARTICIPANT_PATTERN = r"^(.+?)(?:-\d+)?(?:\.\w+)?$"

# The @ID group field (DementiaBank's diagnoses), compared ignoring case, spaces and punctuation.
# Pitt's 'Other' and anything else unknown gives no label: the folder or a metadata file must.
GROUP_LABELS = {
    "control": "control", "cc": "control", "cn": "control", "hc": "control", "healthy": "control",
    "probablead": "impaired", "possiblead": "impaired", "ad": "impaired", "mci": "impaired",
    "vascular": "impaired", "memory": "impaired", "dementia": "impaired", "cd": "impaired",
}
# ADReSS test metadata writes the label as 0 (control) or 1 (impaired).
NUMERIC_LABELS = {"0": "control", "1": "impaired"}


def _folded(value: str) -> str:
    return re.sub(r"[\W_]+", "", value).casefold()


@dataclass(frozen=True)
class ChatOptions:
    """How to render CHAT transcripts and where to find what they do not say (label, participant)."""

    render: RenderOptions = field(default_factory=RenderOptions)
    label_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LABEL_MAP))
    participant_pattern: str = DEFAULT_PARTICIPANT_PATTERN

    def __post_init__(self) -> None:
        unknown = sorted(set(self.label_map.values()) - set(LABELS))
        if unknown:
            raise ValueError(f"label_map maps onto unknown labels {unknown}; use {LABELS}")
        try:
            groups = re.compile(self.participant_pattern).groups
        except re.error as exc:
            raise ValueError(f"participant_pattern is not a regular expression: {exc}") from exc
        if groups != 1:
            raise ValueError(f"participant_pattern must have exactly one group (the participant id); it has {groups}")

    def mapped_label(self, name: str) -> str | None:
        """The label_map's label for a folder (or value) name, compared ignoring case."""
        key = name.strip().casefold()
        return next((label for raw, label in self.label_map.items() if raw.strip().casefold() == key), None)

    def folder_label(self, path: str) -> tuple[str, str] | None:
        """(label, folder) from the innermost folder of ``path`` that label_map names."""
        for folder in reversed(PurePosixPath(path).parts[:-1]):
            label = self.mapped_label(folder)
            if label is not None:
                return label, folder
        return None

    def value_label(self, raw: str) -> str | None:
        """A label written in a metadata file or an @ID group: label_map, then the canonical labels,
        the known groups (GROUP_LABELS) and 0/1."""
        if not raw.strip():
            return None
        folded = _folded(raw)
        return (self.mapped_label(raw) or (folded if folded in LABELS else None) or GROUP_LABELS.get(folded)
                or NUMERIC_LABELS.get(raw.strip()))

    def participant(self, path: str) -> str | None:
        """The participant id the pattern finds in the file's base name, or None."""
        match = re.search(self.participant_pattern, PurePosixPath(path).name, flags=re.IGNORECASE)
        return match.group(1).strip() if match and match.group(1) else None

    def to_dict(self) -> dict:
        """Plain JSON-ready form, stored with the dataset."""
        return {**self.render.model_dump(), "label_map": dict(self.label_map),
                "participant_pattern": self.participant_pattern}


def folder_split(path: str) -> str | None:
    """The split named by a folder of ``path`` (train, test, validation/val/dev), innermost first."""
    for folder in reversed(PurePosixPath(path).parts[:-1]):
        split = SPLIT_ALIASES.get(folder.casefold())
        if split is not None:
            return split
    return None
