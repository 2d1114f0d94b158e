"""FairQueue: tenants take turns; each tenant's items keep their order; past use is not held against a tenant."""

from __future__ import annotations

from worker.fair_queue import FairQueue


def drain(queue: FairQueue) -> list:
    queue.close()
    taken = []
    while (item := queue.get()) is not None:
        taken.append(item)
        queue.task_done()
    return taken


def test_turns_across_tenants_in_each_tenants_order():
    queue = FairQueue()
    for item, tenant in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C")]:
        queue.put(item, tenant)
    assert drain(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_tenant_back_after_a_busy_day_is_not_made_to_wait_for_the_others_to_catch_up():
    queue = FairQueue()
    for i in range(5):
        queue.put(f"a{i}", "A")
    assert [queue.get() for _ in range(5)] == [f"a{i}" for i in range(5)]
    queue.put("b1", "B")
    queue.put("b2", "B")
    queue.put("a5", "A")  # A rejoins level with B, served longer ago than B's first item
    assert drain(queue) == ["b1", "a5", "b2"]


def test_join_waits_for_every_item_to_be_done():
    queue = FairQueue()
    queue.put("x", None)
    assert queue.get() == "x"
    queue.task_done()
    queue.join()  # returns: nothing unfinished
