"""The engine's indexes and their upkeep: every job by id, per-queue ready deques, dead letters, groups, timers.

``JobIndex`` is the data under ``remora.netqueue.engine.Engine`` (which adds
the operations: PUT, RESERVE, ACK, ...): each ``_make_*`` puts a job into a
state and the indexes of that state, ``_leave`` takes it out of them, and
recovery rebuilds them all from the jobs' own fields (``replay_job``,
``rebuild``, ``live_jobs`` for snapshots).

Data layout (memory is the budget: 100,000 ready jobs must fit in tens of MiB):
- ``Entry`` has ``__slots__``; one ``at`` field means "ready since" for a
  ready job, "ready at" for a delayed one, "lease deadline" for a reserved
  one and "died at" for a dead one.
- Each queue keeps ten deques, one per priority: PUT and RESERVE are O(1)
  and FIFO within a priority comes free.  A job deleted while ready stays in
  its deque as a stale entry (state DELETED) until a RESERVE skips it;
  reprioritizing removes the entry (rare, O(n) in C).
- Delayed jobs and leases live in ``remora.netqueue.timers.Timers``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from remora.netqueue.entries import (
    DEAD,
    DELAYED,
    DELETED,
    PRIORITIES,
    READY,
    RESERVED,
    Entry,
    Group,
    Journal,
    QueueIndex,
    Workers,
    insert_ordered,
)
from remora.netqueue.timers import Timers


class JobIndex:
    """Jobs by id and the indexes of their states; the engine's operations keep them in step."""

    def __init__(self, *, clock: Callable[[], float] = time.time, journal: Journal | None = None) -> None:
        self.clock = clock
        self.journal = journal
        self.read_body: Callable[[int], bytes] | None = None  # the log's, for bodies it holds (``body``)
        self.jobs: dict[str, Entry] = {}
        self.queues: dict[str, QueueIndex] = {}
        self.dead: dict[str, Entry] = {}
        self.workers = Workers()
        self.groups: dict[str, Group] = {}
        self.timers = Timers()  # delayed jobs and leases
        self._last_at = 0.0
        self.prio_count = [0] * (PRIORITIES + 1)
        self._shared: dict[Any, Any] = {}  # one object per distinct queue name and ttr, not one per job
        self.woken: set[str] = set()  # queues that gained ready jobs since the server last looked
        self.totals = dict.fromkeys(
            ("put", "reserved", "acked", "nacked", "expired", "dead_lettered", "canceled", "kicked", "purged", "unreserved"), 0
        )

    def body(self, job: Entry) -> bytes:
        """A job's body: in memory, or read back from the write-ahead log that holds it."""
        body = job.body
        if body.__class__ is bytes:
            return body  # type: ignore[return-value]
        assert self.read_body is not None
        return self.read_body(body)  # type: ignore[arg-type]

    # -- index maintenance ------------------------------------------------
    def _queue(self, name: str) -> QueueIndex:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = QueueIndex(name)
        return q

    def _stamp(self, now: float) -> float:
        """A strictly increasing "ready since" time: FIFO order is the order of ``at``, even on ties."""
        last = self._last_at
        at = now if now > last else math.nextafter(last, math.inf)
        self._last_at = at
        return at

    def _make_ready(self, job: Entry, now: float) -> None:
        last = self._last_at  # _stamp and _append_ready inlined: every PUT comes through here
        at = now if now > last else math.nextafter(last, math.inf)
        self._last_at = job.at = at
        job.state = READY
        queue = job.queue
        q = self.queues.get(queue) or self._queue(queue)
        q.ready[job.priority - 1].append(job)
        q.nready += 1
        self.prio_count[job.priority] += 1
        self.woken.add(queue)

    def _append_ready(self, job: Entry) -> None:
        job.state = READY
        q = self._queue(job.queue)
        q.ready[job.priority - 1].append(job)
        q.nready += 1
        self.prio_count[job.priority] += 1
        self.woken.add(job.queue)

    def _make_delayed(self, job: Entry, ready_at: float) -> None:
        job.state = DELAYED
        job.at = ready_at
        self.timers.delay(job)
        self._queue(job.queue).ndelayed += 1
        self.prio_count[job.priority] += 1

    def _make_reserved(self, job: Entry, now: float, worker: str) -> None:
        job.state = RESERVED
        job.attempt += 1
        job.note = (worker or None, job.at)  # worker and "ready since" (see ``Entry``)
        if job.group is not None:
            job.group.held += 1
        job.at = now + job.ttr
        self.timers.lease(job)
        self._queue(job.queue).nreserved += 1
        if worker:
            self.workers.seen(worker, now).jobs.add(job.id)

    def _make_dead(self, job: Entry, now: float, reason: str) -> None:
        job.state = DEAD
        job.at = now
        job.reason = reason
        job.worker = None
        self.dead[job.id] = job
        self._queue(job.queue).ndead += 1
        self.totals["dead_lettered"] += 1

    def _leave(self, job: Entry) -> None:
        """Undo the counters of the job's current state (its deque entry, if any, goes stale)."""
        q = self._queue(job.queue)
        state = job.state
        if state == READY:
            q.nready -= 1
            self.prio_count[job.priority] -= 1
            if job.blocked:  # its entry in the group's list goes stale
                job.blocked = False
                job.group.nblocked -= 1  # type: ignore[union-attr]
        elif state == DELAYED:
            q.ndelayed -= 1
            self.prio_count[job.priority] -= 1
        elif state == RESERVED:
            q.nreserved -= 1
            if job.worker:
                info = self.workers.get(job.worker)
                if info is not None:
                    info.jobs.discard(job.id)
            job.cancel = False
            group = job.group
            if group is not None:
                group.held -= 1
                if group.nblocked:
                    self._unblock(group)
        elif state == DEAD:
            q.ndead -= 1
            del self.dead[job.id]
            job.reason = None
        job.state = DELETED

    def _delete(self, job: Entry) -> None:
        self._leave(job)
        del self.jobs[job.id]

    # -- concurrency groups ---------------------------------------------------
    def _group(self, name: str, limit: int) -> Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = Group(name, limit)
        elif group.limit != limit:
            group.limit = limit
            if group.nblocked:
                self._unblock(group)
        return group

    def _unblock(self, group: Group) -> None:
        """Return the group's oldest best-priority blocked jobs to the front of their queues, one per free place."""
        for job in group.unblock():
            self._to_front(job)

    def _to_front(self, job: Entry) -> None:
        """A ready job goes back to its place near the front of its priority (it is older than what waits there)."""
        dq = self._queue(job.queue).ready[job.priority - 1]
        while dq and dq[0].state != READY:
            dq.popleft()
        insert_ordered(dq, job, front=True)
        self.woken.add(job.queue)

    def _log(self, kind: int, job: Entry, arg: Any = None) -> None:
        if self.journal is not None:
            self.journal(kind, job, arg)

    # -- recovery (the WAL replays jobs and records, then calls rebuild) --
    def replay_job(self, job: Entry) -> None:
        group = job.group  # as decoded: a fresh Group carrying the name and the limit of that PUT
        if group is not None:
            job.group = self._group(group.name, group.limit)
        job.queue = self._shared.setdefault(job.queue, job.queue)
        old = self.jobs.get(job.id)
        if old is not None:
            old.state = DELETED
        self.jobs[job.id] = job

    def rebuild(self) -> None:
        """Recompute every index from the jobs' fields (after replay); leases restart at now + ttr."""
        now = self.clock()
        self.queues.clear()
        self.dead.clear()
        self.timers.clear()
        self.prio_count = [0] * (PRIORITIES + 1)
        for group in self.groups.values():
            group.held = group.nblocked = 0
            for dq in group.blocked:
                dq.clear()
        ready = sorted((j for j in self.jobs.values() if j.state == READY), key=lambda j: j.at)
        for job in self.jobs.values():
            job.blocked = False
            q = self._queue(job.queue)
            if job.state == DELAYED:
                self._make_delayed(job, job.at)
            elif job.state == RESERVED:
                job.at = now + job.ttr
                self.timers.lease(job)
                q.nreserved += 1
                if job.group is not None:
                    job.group.held += 1
            elif job.state == DEAD:
                self.dead[job.id] = job
                q.ndead += 1
        for job in ready:
            self._append_ready(job)
        self._last_at = max([self._last_at, *(j.at for j in ready[-1:])])
        self.woken = set(self.queues)

    def live_jobs(self) -> Iterator[Entry]:
        """Every job in an order that replays to the same FIFO order (for snapshots)."""
        yield from sorted(self.jobs.values(), key=lambda j: (j.state != READY, j.at))
