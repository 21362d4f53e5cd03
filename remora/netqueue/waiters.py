"""Blocking RESERVEs held server-side: one small record per waiter, no thread.

A RESERVE that finds nothing is parked here under each queue it watches and
in a deadline heap.  When a queue gains ready jobs the server asks
``serve()`` to hand them to that queue's waiters in arrival order; when time
passes it asks ``expired()`` for the waiters whose timeout is up.  A waiter
answered through one queue (or whose connection closed) stays in its other
queues' lists marked ``done`` and is skipped, and swept once a list grows
well past the number of live waiters.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any

from remora.netqueue.engine import Engine
from remora.netqueue.entries import Entry
from remora.netqueue.protocol import ReserveRequest


class Waiter:
    __slots__ = ("conn", "deadline", "done", "opcode", "prefix", "req", "rid")

    def __init__(self, conn: Any, opcode: int, rid: int, req: ReserveRequest, prefix: bytes, deadline: float) -> None:
        self.conn, self.opcode, self.rid, self.req, self.prefix, self.deadline = conn, opcode, rid, req, prefix, deadline
        self.done = False


class ParkedReserves:
    """The waiters of one server (not thread-safe: used under the server's lock)."""

    def __init__(self) -> None:
        self._by_queue: dict[str, deque[Waiter]] = {}
        self.deadlines: list[tuple[float, int, Waiter]] = []  # heap of (deadline, seq, waiter); answered ones go stale
        self._seq = itertools.count()
        self.count = 0  # waiters not yet answered

    def park(self, conn: Any, opcode: int, rid: int, req: ReserveRequest, prefix: bytes, now: float) -> None:
        waiter = Waiter(conn, opcode, rid, req, prefix, now + req.timeout)
        self.count += 1
        for queue in req.queues:
            waiters = self._by_queue.setdefault(queue, deque())
            if len(waiters) > 2 * self.count + 32:
                waiters = self._by_queue[queue] = deque(w for w in waiters if not w.done)
            waiters.append(waiter)
        heapq.heappush(self.deadlines, (waiter.deadline, next(self._seq), waiter))
        conn.parked += 1

    def _done(self, waiter: Waiter) -> None:
        waiter.done = True
        self.count -= 1
        waiter.conn.parked -= 1

    def next_deadline(self) -> float | None:
        return self.deadlines[0][0] if self.deadlines else None

    def expired(self, now: float) -> list[Waiter]:
        """Waiters whose timeout passed (now answered: the caller replies with no jobs)."""
        heap, out = self.deadlines, []
        while heap and (heap[0][0] <= now or heap[0][2].done):
            _, _, waiter = heapq.heappop(heap)
            if not waiter.done:
                self._done(waiter)
                out.append(waiter)
        return out

    def serve(self, engine: Engine) -> list[tuple[Waiter, list[Entry]]]:
        """Lease the jobs of every queue that gained ready jobs to its waiters, first come first served."""
        out = []
        while engine.woken:
            queue = engine.woken.pop()
            waiters = self._by_queue.get(queue)
            if not waiters:
                continue
            q = engine.queues.get(queue)
            while waiters and q is not None and q.nready:
                waiter = waiters.popleft()
                if waiter.done:
                    continue
                jobs = engine.reserve(waiter.req.queues, waiter.req.count, waiter.req.worker)
                if not jobs:  # every ready job is set aside (its group is full): wait on
                    waiters.appendleft(waiter)
                    break
                self._done(waiter)
                out.append((waiter, jobs))
            if not waiters:
                del self._by_queue[queue]
        return out

    def drop(self, conn: Any) -> None:
        """Forget the waiters of a closed connection."""
        if not conn.parked:
            return
        for waiters in self._by_queue.values():
            for waiter in waiters:
                if waiter.conn is conn and not waiter.done:
                    self._done(waiter)

    def drain(self) -> list[Waiter]:
        """Every waiter still parked (now answered), for shutdown."""
        out = [w for _, _, w in self.deadlines if not w.done]
        for waiter in out:
            self._done(waiter)
        self.deadlines.clear()
        self._by_queue.clear()
        return out
