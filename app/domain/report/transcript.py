"""The one input shape of the report: a real record or a synthetic sample."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transcript:
    """A text with its label; real records carry their participant, synthetic samples None."""

    id: str
    text: str
    label: str
    participant: str | None = None
