"""A work queue that serves tenants in turn, so one tenant's backlog never holds up another's."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Hashable, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Each tenant's items in its own FIFO; ``get`` takes from the tenant served least so far.

    A tenant that had nothing waiting joins level with the least served of those waiting, so its past
    use neither helps nor hurts it; ties go to the tenant served longest ago (or never). With tenant A's
    three items queued and B's one added after A's first started, the order is A, B, A, A.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[Hashable, deque[T]] = {}
        self._served: dict[Hashable, int] = {}
        self._last_served: dict[Hashable, int] = {}
        self._turn = 0
        self._unfinished = 0
        self._closed = False

    def put(self, item: T, tenant: Hashable) -> None:
        with self._cond:
            if tenant not in self._waiting:
                self._served[tenant] = min((self._served[t] for t in self._waiting), default=0)
                self._waiting[tenant] = deque()
            self._waiting[tenant].append(item)
            self._unfinished += 1
            self._cond.notify()

    def get(self) -> T | None:
        """The next item, waiting for one; None once the queue is closed and empty."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            tenant = min(self._waiting, key=lambda t: (self._served[t], self._last_served.get(t, -1)))
            items = self._waiting[tenant]
            item = items.popleft()
            if not items:
                del self._waiting[tenant]
            self._served[tenant] += 1
            self._last_served[tenant] = self._turn
            self._turn += 1
            return item

    def task_done(self) -> None:
        """One item taken by ``get`` has been handled."""
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def join(self) -> None:
        """Wait until every item put so far has been handled."""
        with self._cond:
            while self._unfinished:
                self._cond.wait()

    def close(self) -> None:
        """``get`` hands out what is waiting, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
