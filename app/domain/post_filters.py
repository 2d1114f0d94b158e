"""Post-filters: which drawn samples a corpus keeps, and why the others were rejected.

A sample is judged against the real train transcripts its adapter learned from (loops longer than any
real speaker's, word runs copied from a real transcript, a style a classifier of those transcripts
reads as another label) and against the samples the corpus already accepted (exact and near duplicates). The first failing check is the reason; every measurement is
kept with the sample either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Hashable, Iterable, Mapping, Sequence

from app.domain.degeneration import longest_repeat, repeat_limit
from app.domain.label_fidelity import TextLabelClassifier
from app.domain.markers import tokenize
from app.domain.overlap import LongestMatchIndex, NearDuplicateIndex
from app.domain.sampling import FilterSettings, FinishReason


def sample_ref(generation_id: str, label: str, index: int) -> str:
    """How checks name another sample: ``<generation id>/<label>/<index>``."""
    return f"{generation_id}/{label}/{index}"


class RejectReason(StrEnum):
    TRUNCATED = "truncated"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    DEGENERATE = "degenerate"
    MEMORIZED = "memorized"
    LABEL_MISMATCH = "label_mismatch"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"


@dataclass(frozen=True)
class RealText:
    """A real train transcript: its record id, label and text."""

    record_id: Hashable
    label: str
    text: str


@dataclass(frozen=True)
class Verdict:
    """None as reason means accepted; checks holds every measurement taken."""

    reason: RejectReason | None
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.reason is None


class PostFilter:
    """Judges samples one at a time; accepted ones join the duplicate index for those that follow."""

    def __init__(
        self,
        settings: FilterSettings,
        real_train: Sequence[RealText],
        accepted: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.settings = settings
        tokens = [(r.record_id, tokenize(r.text)) for r in real_train]
        self._real = LongestMatchIndex(tokens)
        by_label: dict[str, list[Sequence[str]]] = {}
        for r, (_, t) in zip(real_train, tokens):
            by_label.setdefault(r.label, []).append(t)
        self.repeat_limits: Mapping[str, int] = {label: repeat_limit(ts) for label, ts in by_label.items()}
        # The consistency check needs real texts of two labels; with fewer there is nothing to tell apart.
        self._classifier = (
            TextLabelClassifier([r.text for r in real_train], [r.label for r in real_train])
            if settings.label_consistency and len(by_label) > 1 else None
        )
        self._seen: NearDuplicateIndex[str] = NearDuplicateIndex(settings.near_duplicate_jaccard)
        for key, text in accepted:
            self._seen.add(key, tokenize(text))

    def judge(self, label: str, text: str, finish_reason: FinishReason) -> Verdict:
        """Measure a sample and decide; nothing is remembered until ``accept``."""
        s = self.settings
        words = tokenize(text)
        run = longest_repeat(words)
        limit = self.repeat_limits.get(label, 1)
        real = self._real.longest_match(words)
        duplicate = self._seen.find(words) if s.dedupe else None
        checks: dict[str, Any] = {
            "words": len(words),
            "longest_repeat": {"count": run.count, "phrase": " ".join(run.phrase), "real_limit": limit},
            "real_overlap": {"words": real.words, "record_id": real.document},
        }
        predicted = self._classifier.predict([text])[0] if self._classifier is not None else None
        if predicted is not None:
            checks["read_as"] = predicted
        if duplicate is not None:
            checks["duplicate_of"] = {"sample": duplicate.key, "similarity": round(duplicate.similarity, 3)}
        reasons = (
            (RejectReason.TRUNCATED, finish_reason == FinishReason.LENGTH and not s.keep_truncated),
            (RejectReason.TOO_SHORT, len(words) < s.min_words),
            (RejectReason.TOO_LONG, s.max_words is not None and len(words) > s.max_words),
            (RejectReason.DEGENERATE, s.degenerate and run.count > limit),
            (RejectReason.MEMORIZED, s.memorization_ngram is not None and real.words >= s.memorization_ngram),
            (RejectReason.LABEL_MISMATCH, predicted is not None and predicted != label),
            (RejectReason.DUPLICATE, duplicate is not None and duplicate.exact),
            (RejectReason.NEAR_DUPLICATE, duplicate is not None and not duplicate.exact),
        )
        return Verdict(next((reason for reason, failed in reasons if failed), None), checks)

    def accept(self, key: str, text: str) -> None:
        """Remember an accepted sample so later ones that repeat it are rejected."""
        if self.settings.dedupe:
            self._seen.add(key, tokenize(text))
