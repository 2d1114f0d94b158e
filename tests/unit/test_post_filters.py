"""Which samples a corpus keeps, and the reason for each one it rejects."""

from __future__ import annotations

import pytest

from app.domain.post_filters import PostFilter, RealText, RejectReason
from app.domain.sampling import FilterSettings, FinishReason

REAL = [
    RealText(1, "impaired", "uh the the the boy is um on the thing and the girl wants one"),
    RealText(2, "control", "The boy stands on a tipping stool and hands a cookie to his sister."),
    RealText(3, "control", "Water pours over the edge of the sink while the mother dries a plate."),
]
FRESH = "a young lad climbs up to reach the jar of biscuits as his sibling watches quietly from below"


def judge(text: str, label: str = "control", finish=FinishReason.STOP, real=REAL, **settings):
    settings.setdefault("label_consistency", False)  # tested on its own below, with real texts to learn from
    return PostFilter(FilterSettings(**settings), real).judge(label, text, finish)


class TestReasons:
    def test_a_fresh_complete_sample_is_accepted_with_its_measurements(self):
        verdict = judge(FRESH)
        assert verdict.accepted and verdict.reason is None
        assert verdict.checks["words"] == 18
        assert verdict.checks["longest_repeat"] == {"count": 1, "phrase": "a", "real_limit": 1}
        assert verdict.checks["real_overlap"]["words"] < 8

    def test_cut_at_max_tokens_is_truncated_unless_kept(self):
        assert judge(FRESH, finish=FinishReason.LENGTH).reason == RejectReason.TRUNCATED
        assert judge(FRESH, finish=FinishReason.LENGTH, keep_truncated=True).accepted

    def test_length_limits(self):
        assert judge("the boy fell").reason == RejectReason.TOO_SHORT
        assert judge(FRESH, max_words=10).reason == RejectReason.TOO_LONG
        assert judge("the boy fell", min_words=0).accepted

    def test_a_loop_longer_than_any_real_one_of_the_label_is_degenerate(self):
        loop = "the boy is on the stool and the the the cookie jar is up there somewhere high"
        # Real impaired speech has "the the the" (3): the same run is fine for impaired, not for control.
        assert judge(loop, label="impaired").accepted
        assert judge(loop, label="control").reason == RejectReason.DEGENERATE
        assert judge(loop, label="control", degenerate=False).accepted

    def test_a_run_of_eight_words_from_a_real_transcript_is_memorized(self):
        copied = "well i think the boy stands on a tipping stool and hands a cookie over there"
        verdict = judge(copied)
        assert verdict.reason == RejectReason.MEMORIZED
        assert verdict.checks["real_overlap"] == {"words": 11, "record_id": 2}
        assert judge(copied, memorization_ngram=None).accepted
        assert judge(copied, memorization_ngram=12).accepted

    def test_the_first_failing_check_is_the_reason(self):
        assert judge("the the the the", finish=FinishReason.LENGTH).reason == RejectReason.TRUNCATED


class TestLabelConsistency:
    REAL_BY_STYLE = [
        RealText(i, label, text)
        for i, (label, text) in enumerate(
            [("impaired", f"uh the um {w} thing uh you know um the stuff") for w in ("boy", "girl", "sink", "jar")]
            + [("control", f"The {w} is clearly visible on the left of the kitchen scene.") for w in
               ("boy", "girl", "sink", "jar")]
        )
    ]

    def test_a_sample_read_as_the_other_label_is_rejected(self):
        post_filter = PostFilter(FilterSettings(min_words=0, memorization_ngram=None), self.REAL_BY_STYLE)
        hesitant = "um the uh cookie thing uh you know the stuff um"
        fluent = "The cookie jar is clearly visible on the left of the cupboard."
        verdict = post_filter.judge("control", hesitant, FinishReason.STOP)
        assert verdict.reason == RejectReason.LABEL_MISMATCH and verdict.checks["read_as"] == "impaired"
        assert post_filter.judge("impaired", hesitant, FinishReason.STOP).accepted
        assert post_filter.judge("control", fluent, FinishReason.STOP).accepted
        assert post_filter.judge("impaired", fluent, FinishReason.STOP).reason == RejectReason.LABEL_MISMATCH

    def test_off_or_with_one_label_only_nothing_is_checked(self):
        hesitant = "um the uh cookie thing uh you know the stuff um"
        off = PostFilter(FilterSettings(min_words=0, label_consistency=False), self.REAL_BY_STYLE)
        assert off.judge("control", hesitant, FinishReason.STOP).accepted
        one_label = [r for r in self.REAL_BY_STYLE if r.label == "impaired"]
        verdict = PostFilter(FilterSettings(min_words=0), one_label).judge("control", hesitant, FinishReason.STOP)
        assert verdict.accepted and "read_as" not in verdict.checks


class TestDuplicates:
    def test_exact_and_near_duplicates_of_accepted_samples(self):
        post_filter = PostFilter(FilterSettings(label_consistency=False), REAL, accepted=[("gen_a/control/0", FRESH)])
        exact = post_filter.judge("control", FRESH.upper() + "!", FinishReason.STOP)
        assert exact.reason == RejectReason.DUPLICATE
        assert exact.checks["duplicate_of"] == {"sample": "gen_a/control/0", "similarity": 1.0}
        near = post_filter.judge("control", FRESH + " and smiles", FinishReason.STOP)
        assert near.reason == RejectReason.NEAR_DUPLICATE

    def test_judging_remembers_nothing_until_accepted(self):
        post_filter = PostFilter(FilterSettings(label_consistency=False), REAL)
        assert post_filter.judge("control", FRESH, FinishReason.STOP).accepted
        assert post_filter.judge("control", FRESH, FinishReason.STOP).accepted
        post_filter.accept("gen_a/control/1", FRESH)
        assert post_filter.judge("control", FRESH, FinishReason.STOP).reason == RejectReason.DUPLICATE

    def test_dedupe_off(self):
        post_filter = PostFilter(FilterSettings(dedupe=False, label_consistency=False), REAL)
        post_filter.accept("k", FRESH)
        assert post_filter.judge("control", FRESH, FinishReason.STOP).accepted


@pytest.mark.parametrize("label", ["control", "impaired"])
def test_repeat_limits_come_from_the_real_texts_of_each_label(label):
    assert PostFilter(FilterSettings(), REAL).repeat_limits[label] == {"control": 1, "impaired": 3}[label]
