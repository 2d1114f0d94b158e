"""Which candidates a generation draws next, and the seed of each."""

from __future__ import annotations

from app.domain.sampling import sample_seed
from app.services.generations import LabelTally, plan_chunk


def tally(wanted, accepted=0, rejected=0, next_index=None, budget=None) -> LabelTally:
    drawn = accepted + rejected
    return LabelTally(wanted, accepted, rejected, drawn if next_index is None else next_index, budget or 3 * wanted)


class TestPlanChunk:
    def test_first_chunk_asks_for_what_each_label_needs(self):
        plan = plan_chunk({"control": tally(3), "impaired": tally(2)}, chunk_size=64)
        assert plan == [("control", 0), ("control", 1), ("control", 2), ("impaired", 0), ("impaired", 1)]

    def test_a_big_request_is_cut_to_the_chunk_size_across_labels(self):
        plan = plan_chunk({"control": tally(100), "impaired": tally(100)}, chunk_size=32)
        assert len(plan) == 32
        assert [i for label, i in plan if label == "control"] == list(range(16))
        assert [i for label, i in plan if label == "impaired"] == list(range(16))

    def test_rejections_ask_for_more_at_the_acceptance_rate(self):
        # 5 accepted of 10 drawn: the 5 still missing need about 10 more draws, from index 10 on.
        plan = plan_chunk({"impaired": tally(10, accepted=5, rejected=5)}, chunk_size=64)
        assert plan == [("impaired", i) for i in range(10, 20)]

    def test_budget_caps_the_draws(self):
        plan = plan_chunk({"control": tally(10, accepted=2, rejected=26, budget=30)}, chunk_size=64)
        assert plan == [("control", 28), ("control", 29)]
        assert plan_chunk({"control": tally(10, accepted=2, rejected=28, budget=30)}, chunk_size=64) == []

    def test_finished_labels_draw_nothing(self):
        assert plan_chunk({"control": tally(4, accepted=4, rejected=1)}, chunk_size=8) == []

    def test_every_open_label_gets_at_least_one_slot(self):
        plan = plan_chunk({"control": tally(1000), "impaired": tally(1)}, chunk_size=4)
        assert ("impaired", 0) in plan


class TestSampleSeed:
    def test_depends_on_seed_label_and_index_only(self):
        assert sample_seed(7, "control", 3) == sample_seed(7, "control", 3)
        seeds = {sample_seed(s, label, i) for s in (0, 1) for label in ("control", "impaired") for i in range(50)}
        assert len(seeds) == 200
        assert all(0 <= s < 2**63 for s in seeds)
