"""NetQueue's queue engine: priorities, FIFO, delays, leases, dead letters.

Pure logic: no sockets, no files, no threads.  Time comes from an
injectable ``clock`` (wall-clock seconds, so delays survive a restart), and
every state change is reported to an optional ``journal`` callback as
``journal(kind, job, arg)`` so the write-ahead log can persist it; recovery
feeds the same facts back (``replay_job``, ``entries.replay``, ``rebuild()``).
The engine is not thread-safe: the server calls it under one lock.

The indexes and their upkeep (data layout, recovery) are ``JobIndex``'s
(``remora.netqueue.jobindex``); this module holds the operations.

Semantics (DESIGN.md): priority 1 (highest)..10; FIFO within a priority;
PUT is idempotent by id; ``attempt`` counts deliveries; ``max_attempts``
counts lease expiries — the ``max_attempts``-th expiry dead-letters the job
(reason "lease expired"); NACK never dead-letters; ACK deletes; CANCEL
deletes a waiting job and flags a reserved one (a flagged job is deleted
instead of being requeued when its holder NACKs it or its lease expires).

Dispatch (docs/dispatch.md):
- ``unreserve`` hands a reserved job that was never started back to the
  place it had (its "ready since" time), without counting an expiry: the
  server calls it for the unstarted reservations of a connection that closed.
- A job may belong to a concurrency group (``group``, ``limit``: at most
  ``limit`` of the group's jobs reserved at once, 0 = no limit; the latest PUT
  sets the group's limit).  RESERVE sets a job of a full group aside
  (``Group.block``, O(1)) and goes on with the next one; when one of the
  group's reservations ends, its oldest best-priority job returns to the
  front of its queue.  No reordering within a group, no NACK/delay loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from remora.netqueue.entries import (
    DEAD,
    DELAYED,
    J_CANCEL,
    J_DELETE,
    J_EXPIRE,
    J_KICK,
    J_PRIORITY,
    J_PROMOTE,
    J_PUT,
    J_RELEASE,
    J_RESERVE,
    PRIORITIES,
    READY,
    RESERVED,
    STATE_NAMES,
    Entry,
    Journal,
    QueueFullError,
    QueueIndex,
    RateWindow,
)
from remora.netqueue.jobindex import JobIndex


class Engine(JobIndex):
    """The queue state machine (see the module docstring for the semantics) over its ``JobIndex``."""

    def __init__(self, *, clock: Callable[[], float] = time.time, max_size: int = 100000, journal: Journal | None = None) -> None:
        super().__init__(clock=clock, journal=journal)
        self.max_size = max_size
        self.started = clock()
        self._acks = RateWindow()
        self._waits = RateWindow()

    # -- producers --------------------------------------------------------
    def waiting(self, queue: str) -> int:
        q = self.queues.get(queue)
        return q.nready + q.ndelayed if q else 0

    def put(
        self,
        job_id: str,
        queue: str,
        priority: int,
        delay: float,
        ttr: float,
        max_attempts: int,
        body: bytes,
        group: str = "",
        limit: int = 0,
    ) -> bool:
        """Add a job; False (and no change) when the id is already held in any state.

        ``group``/``limit``: its concurrency group (at most ``limit`` of its jobs reserved at once; 0: no limit).
        """
        if job_id in self.jobs:
            if group:
                self._group(group, limit)  # a repeated PUT still carries the group's current limit
            return False
        q = self.queues.get(queue)
        if q is not None and q.nready + q.ndelayed >= self.max_size:
            raise QueueFullError(queue, self.max_size)
        self._insert(self.clock(), job_id, queue, priority, delay, ttr, max_attempts, body, group, limit)
        return True

    def _insert(
        self,
        now: float,
        job_id: str,
        queue: str,
        priority: int,
        delay: float,
        ttr: float,
        max_attempts: int,
        body: bytes,
        group: str = "",
        limit: int = 0,
    ) -> None:
        shared = self._shared  # one object per distinct queue name, not one per job
        job = Entry(job_id, shared.setdefault(queue, queue), priority, ttr, max_attempts, body, now)
        if group:
            job.group = self._group(group, limit)
        self.jobs[job_id] = job
        if delay > 0:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job, now)
        self.totals["put"] += 1
        if self.journal is not None:
            self.journal(J_PUT, job, None)

    def put_many(self, items: Iterable[tuple[Any, ...]]) -> list[bool]:
        """All or nothing on QUEUE_FULL: the capacity of every queue is checked first."""
        items = list(items)
        new: dict[str, int] = {}
        seen: set[str] = set()
        for item in items:
            if item[0] not in self.jobs and item[0] not in seen:
                seen.add(item[0])
                new[item[1]] = new.get(item[1], 0) + 1
        for queue, n in new.items():
            if self.waiting(queue) + n > self.max_size:
                raise QueueFullError(queue, self.max_size)
        out = []
        now = self.clock()
        jobs = self.jobs
        insert = self._insert
        for item in items:  # (id, queue, priority, delay, ttr, max_attempts, body[, group, limit])
            if item[0] in jobs:
                if len(item) > 7 and item[7]:
                    self._group(item[7], item[8])  # a repeated PUT still carries the group's current limit
                out.append(False)
            else:
                insert(now, *item)
                out.append(True)
        return out

    # -- consumers --------------------------------------------------------
    def reserve(self, queues: list[str], count: int = 1, worker: str = "") -> list[Entry]:
        """Lease up to ``count`` ready jobs, best priority first, FIFO within it; never blocks."""
        out: list[Entry] = []
        if len(queues) == 1:  # the usual case, without building a list of candidates
            q = self.queues.get(queues[0])
            if q is None or not q.nready:
                return out
            qs = [q]
        else:
            qs = [q for q in (self.queues.get(name) for name in queues) if q is not None and q.nready]
            if not qs:
                return out
        now = self.clock()
        prio_count = self.prio_count
        journal = self.journal
        for p in range(PRIORITIES):
            if not prio_count[p + 1]:
                continue  # no ready (or delayed) job of this priority anywhere
            while len(out) < count:
                job = self._pop_ready(qs, p)
                if job is None:
                    break
                group = job.group
                if group is not None and 0 < group.limit <= group.held:
                    group.block(job)  # its place is kept; the next job may belong to a group with room
                    continue
                self._waits.add(now, max(0.0, now - job.at))  # time spent ready
                self._leave(job)
                self._make_reserved(job, now, worker)
                out.append(job)
                if journal is not None:
                    journal(J_RESERVE, job, worker)
            if len(out) >= count:
                break
        self.totals["reserved"] += len(out)
        return out

    def _pop_ready(self, qs: list[QueueIndex], p: int) -> Entry | None:
        if len(qs) == 1:
            dq = qs[0].ready[p]
            while dq:
                job = dq.popleft()
                if job.state == READY:
                    return job
            return None
        best: deque[Entry] | None = None
        for q in qs:
            dq = q.ready[p]
            while dq and dq[0].state != READY:
                dq.popleft()
            if dq and (best is None or dq[0].at < best[0].at):
                best = dq
        return best.popleft() if best is not None else None

    def ack(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state != RESERVED:
            return False
        worker = job.worker
        if worker:
            info = self.workers.get(worker)
            if info is not None:
                info.done += 1
        self._delete(job)
        self.totals["acked"] += 1
        self._acks.add(self.clock())
        if self.journal is not None:
            self.journal(J_DELETE, job, None)
        return True

    def nack(self, job_id: str, delay: float = 0.0) -> bool:
        """Release a reserved job (after ``delay``); a cancel-flagged job is deleted instead."""
        job = self.jobs.get(job_id)
        if job is None or job.state != RESERVED:
            return False
        now = self.clock()
        canceled = job.cancel
        if job.worker and job.worker in self.workers:
            self.workers[job.worker].failed += 1
        self._leave(job)
        job.worker = None
        self.totals["nacked"] += 1
        if canceled:
            del self.jobs[job.id]
            self.totals["canceled"] += 1
            self._log(J_DELETE, job)
            return True
        if delay > 0:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job, now)
        self._log(J_RELEASE, job)
        return True

    def unreserve(self, job_id: str, attempt: int) -> bool:
        """Hand back a reservation that was never started (its holder is gone): the job takes its old place.

        ``attempt`` names the reservation (a later one of the same job is left alone).  Not an expiry:
        the job comes no closer to the dead-letter queue.  A cancel-flagged job is deleted instead.
        """
        job = self.jobs.get(job_id)
        if job is None or job.state != RESERVED or job.attempt != attempt:
            return False
        canceled = job.cancel
        self._leave(job)
        job.worker = None
        if canceled:
            del self.jobs[job.id]
            self.totals["canceled"] += 1
            self._log(J_DELETE, job)
            return True
        job.state = READY
        job.at = job.since
        q = self._queue(job.queue)
        q.nready += 1
        self.prio_count[job.priority] += 1
        self._to_front(job)
        self.totals["unreserved"] += 1
        self._log(J_RELEASE, job)
        return True

    def touch(self, job_ids: list[str], worker: str = "") -> dict[str, str]:
        """Renew leases; also the worker heartbeat. {id: ok | canceled | lost}."""
        now = self.clock()
        if worker:
            self.workers.seen(worker, now)
        out = {}
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or job.state != RESERVED:
                out[job_id] = "lost"
                continue
            job.at = now + job.ttr
            self.timers.lease(job)
            out[job_id] = "canceled" if job.cancel else "ok"
        return out

    def cancel(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            return "not_found"
        if job.state == RESERVED:
            if not job.cancel:
                job.cancel = True
                self._log(J_CANCEL, job)
            return "flagged"
        self._delete(job)
        self.totals["canceled"] += 1
        self._log(J_DELETE, job)
        return "removed"

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Re-order a waiting job (it joins the back of its new priority); a reserved one keeps it if handed back."""
        job = self.jobs.get(job_id)
        if job is None or job.state not in (READY, DELAYED, RESERVED):
            return False
        if job.priority == priority:
            return True
        if job.state == RESERVED:
            job.priority = priority
            self._log(J_PRIORITY, job, priority)
            return True
        self.prio_count[job.priority] -= 1
        self.prio_count[priority] += 1
        if job.state == READY:
            # it joins the back of its new priority: "ready since" restarts so FIFO order survives a replay
            if job.blocked:
                group = job.group
                assert group is not None
                group.blocked[job.priority - 1].remove(job)
                group.blocked[priority - 1].append(job)
            else:
                q = self._queue(job.queue)
                q.ready[job.priority - 1].remove(job)
                q.ready[priority - 1].append(job)
                self.woken.add(job.queue)
            job.at = self._stamp(self.clock())
        job.priority = priority
        self._log(J_PRIORITY, job, priority)
        return True

    # -- time -------------------------------------------------------------
    def tick(self) -> None:
        """Promote due delayed jobs and expire due leases (call whenever time may have passed)."""
        timers = self.timers
        if not timers.delayed and not timers.leases:
            return
        now = self.clock()
        for job in timers.due_delayed(now):
            self._leave(job)
            self._make_ready(job, now)
            self._log(J_PROMOTE, job)
        for job in timers.due_leases(now):
            self._expire(job, now)

    def _expire(self, job: Entry, now: float) -> None:
        canceled = job.cancel
        if job.worker and job.worker in self.workers:
            self.workers[job.worker].failed += 1
        self._leave(job)
        job.worker = None
        job.expired += 1
        self.totals["expired"] += 1
        if canceled:
            del self.jobs[job.id]
            self.totals["canceled"] += 1
        elif job.expired >= job.max_attempts:
            self._make_dead(job, now, "lease expired")
        else:
            self._make_ready(job, now)
        self._log(J_EXPIRE, job)

    def next_deadline(self) -> float | None:
        """The earliest time ``tick()`` could change something (stale heap entries included)."""
        return self.timers.next_deadline()

    # -- inspection -------------------------------------------------------
    def peek(self, job_id: str) -> Entry | None:
        return self.jobs.get(job_id)

    def list_jobs(self, queue: str | None = None, state: str | None = None, limit: int = 100) -> list[Entry]:
        want = STATE_NAMES.index(state) if state else None
        source: Iterable[Entry] = self.dead.values() if want == DEAD else self.jobs.values()
        out = []
        for job in source:
            if (queue is None or job.queue == queue) and (want is None or job.state == want):
                out.append(job)
                if len(out) >= limit:
                    break
        return out

    def dlq_list(self, queue: str | None = None, limit: int = 100) -> list[Entry]:
        return self.list_jobs(queue, "dead", limit)

    def _dead_targets(self, job_ids: list[str] | None) -> list[Entry]:
        if job_ids is None:
            return list(self.dead.values())
        return [self.dead[j] for j in dict.fromkeys(job_ids) if j in self.dead]

    def dlq_kick(self, job_ids: list[str] | None = None) -> int:
        """Dead letters back to ready with a fresh expiry count."""
        now = self.clock()
        jobs = self._dead_targets(job_ids)
        for job in jobs:
            self._leave(job)
            job.expired = 0
            self._make_ready(job, now)
            self._log(J_KICK, job)
        self.totals["kicked"] += len(jobs)
        return len(jobs)

    def dlq_purge(self, job_ids: list[str] | None = None) -> int:
        jobs = self._dead_targets(job_ids)
        for job in jobs:
            self._delete(job)
            self._log(J_DELETE, job)
        self.totals["purged"] += len(jobs)
        return len(jobs)

    # -- workers ----------------------------------------------------------
    def register_worker(self, worker_id: str, host: str, concurrency: int, resources: dict[str, float] | None = None) -> None:
        info = self.workers.seen(worker_id, self.clock())
        info.host = host
        info.concurrency = concurrency
        if resources is not None:
            info.resources = resources

    def deregister_worker(self, worker_id: str) -> None:
        """The worker stopped cleanly: it leaves the list at once (leases it still holds run on)."""
        self.workers.pop(worker_id, None)

    def worker_list(self) -> list[dict[str, Any]]:
        return self.workers.listing(self.clock())

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        queues = {name: q.counts() for name, q in sorted(self.queues.items())}
        ready = sum(q["ready"] for q in queues.values())
        delayed = sum(q["delayed"] for q in queues.values())
        return {
            "queue_depth": ready + delayed,
            "active_workers": self.workers.prune(now).active(now),
            "processing_rate": round(self._acks.rate(now, self.started), 3),
            "average_wait_time": round(self._waits.mean(now), 6),
            "priority_distribution": {str(p): self.prio_count[p] for p in range(1, PRIORITIES + 1)},
            "ready": ready,
            "delayed": delayed,
            "reserved": sum(q["reserved"] for q in queues.values()),
            "dead": len(self.dead),
            "jobs": len(self.jobs),
            "workers": len(self.workers),
            "queues": queues,
            "totals": dict(self.totals),
            "max_size": self.max_size,
        }
