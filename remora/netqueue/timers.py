"""The engine's clock-driven work: delayed jobs waiting to become ready, and leases waiting to expire.

Two heaps of ``(time, id, seq, job)`` (ties go by id, then by push order).
Nothing is ever removed from the middle: a job whose state or ``at`` no
longer matches its entry (it was acked, released, touched, reprioritized) is
a stale entry, skipped when it comes to the top.  A TOUCH pushes a second
lease entry; the first one then goes stale.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from remora.netqueue.entries import DELAYED, RESERVED, Entry


class Timers:
    """Delayed jobs (due at ``job.at`` to become ready) and leases (due at ``job.at`` to expire)."""

    __slots__ = ("delayed", "leases", "seq")

    def __init__(self) -> None:
        self.delayed: list[tuple[float, str, int, Entry]] = []
        self.leases: list[tuple[float, str, int, Entry]] = []
        self.seq = itertools.count()

    def delay(self, job: Entry) -> None:
        """The delayed job becomes ready at ``job.at``."""
        heapq.heappush(self.delayed, (job.at, job.id, next(self.seq), job))

    def lease(self, job: Entry) -> None:
        """The reserved job's lease ends at ``job.at`` (a renewed lease leaves the old entry stale)."""
        heapq.heappush(self.leases, (job.at, job.id, next(self.seq), job))

    def due_delayed(self, now: float) -> Iterator[Entry]:
        """Delayed jobs due by ``now`` (each still delayed with that time when it is yielded)."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            at, _, _, job = heapq.heappop(delayed)
            if job.state == DELAYED and job.at == at:
                yield job

    def due_leases(self, now: float) -> Iterator[Entry]:
        """Reserved jobs whose lease ran out by ``now``."""
        leases = self.leases
        while leases and leases[0][0] <= now:
            at, _, _, job = heapq.heappop(leases)
            if job.state == RESERVED and job.at == at:
                yield job

    def next_deadline(self) -> float | None:
        """The earliest time something could be due (stale entries included)."""
        delayed, leases = self.delayed, self.leases
        if delayed:
            return min(delayed[0][0], leases[0][0]) if leases else delayed[0][0]
        return leases[0][0] if leases else None

    def clear(self) -> None:
        self.delayed.clear()
        self.leases.clear()
