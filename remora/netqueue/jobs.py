"""NetQueue's data: job states, journal kinds, the Job record, per-queue indexes, worker registry entries.

Kept apart from the engine's logic so the write-ahead log and the engine
share one definition of a job.  ``Job`` and friends use ``__slots__``:
100,000 ready jobs must fit in tens of MiB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

READY, DELAYED, RESERVED, DEAD, DELETED = range(5)
STATE_NAMES = ("ready", "delayed", "reserved", "dead", "deleted")
PRIORITIES = 10

# journal kinds (the WAL's record types)
J_PUT = 1  # the whole job (also the snapshot's record)
J_RESERVE = 2  # arg: worker id
J_DELETE = 3  # ack, cancel of a waiting job, purge, canceled job released
J_RELEASE = 4  # nack: the job's new state (ready or delayed) and at
J_EXPIRE = 5  # lease expired: retry or dead-letter, decided by expired/max_attempts
J_KICK = 6  # dead -> ready
J_PRIORITY = 7  # arg: new priority
J_CANCEL = 8  # flag a reserved job
J_PROMOTE = 9  # a delayed job became ready

Journal = Callable[[int, "Job", Any], None]
WORKER_ACTIVE_WINDOW = 30.0  # a worker heard from within this many seconds is active
WORKER_FORGET_AFTER = 3600.0  # a silent worker without leases is dropped after this


class QueueFullError(Exception):
    """A PUT would take a queue past max_size (nothing was stored)."""

    def __init__(self, queue: str, max_size: int) -> None:
        super().__init__(f"queue {queue!r} holds {max_size} waiting jobs (max_size)")
        self.queue = queue


class Job:
    __slots__ = (
        "at",
        "attempt",
        "blocked",
        "body",
        "cancel",
        "created",
        "expired",
        "group",
        "id",
        "max_attempts",
        "priority",
        "queue",
        "reason",
        "since",
        "state",
        "ttr",
        "worker",
    )

    def __init__(self, job_id: str, queue: str, priority: int, ttr: float, max_attempts: int, body: bytes, created: float) -> None:
        self.id = job_id
        self.queue = queue
        self.priority = priority
        self.ttr = ttr
        self.max_attempts = max_attempts
        self.body = body
        self.created = created
        self.state = DELETED
        self.attempt = 0
        self.expired = 0
        self.at = created
        self.worker: str | None = None
        self.cancel = False
        self.reason: str | None = None
        self.group: _Group | None = None  # its concurrency group (e.g. the server it runs on)
        self.blocked = False  # ready, but set aside while its group is at its limit
        self.since = created  # "ready since" of a reserved job: where it goes back if handed back unstarted

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.queue!r}, p{self.priority}, {STATE_NAMES[self.state]}, attempt={self.attempt})"


class _Queue:
    __slots__ = ("name", "ndead", "ndelayed", "nready", "nreserved", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: list[deque[Job]] = [deque() for _ in range(PRIORITIES)]
        self.nready = self.ndelayed = self.nreserved = self.ndead = 0

    def counts(self) -> dict[str, int]:
        return {"ready": self.nready, "delayed": self.ndelayed, "reserved": self.nreserved, "dead": self.ndead}


class _Group:
    """Jobs that may hold at most ``limit`` reservations at once (0: no limit), e.g. one server's jobs.

    ``held`` counts the group's reserved jobs.  A ready job met by RESERVE while
    its group is full is set aside in ``blocked`` (per priority, oldest first)
    instead of being leased; when a reservation of the group ends, the oldest
    best-priority blocked job goes back to the front of its queue.  Jobs of a
    full group therefore keep their place ahead of later jobs of the same group.
    """

    __slots__ = ("blocked", "held", "limit", "name", "nblocked")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.held = 0
        self.nblocked = 0
        self.blocked: list[deque[Job]] = [deque() for _ in range(PRIORITIES)]

    def full(self) -> bool:
        return 0 < self.limit <= self.held


class WorkerInfo:
    __slots__ = ("concurrency", "done", "failed", "host", "id", "jobs", "last_heartbeat", "registered")

    def __init__(self, worker_id: str, now: float) -> None:
        self.id = worker_id
        self.host = ""
        self.concurrency = 0
        self.last_heartbeat = now
        self.registered = now
        self.jobs: set[str] = set()
        self.done = 0
        self.failed = 0


class _Window:
    """Counts and sums over the last ``span`` seconds in one-second buckets."""

    __slots__ = ("buckets", "span")

    def __init__(self, span: int = 60) -> None:
        self.span = span
        self.buckets: deque[list[float]] = deque()  # [second, count, sum]

    def add(self, now: float, value: float = 0.0, count: int = 1) -> None:
        second = int(now)
        if self.buckets and self.buckets[-1][0] == second:
            bucket = self.buckets[-1]
            bucket[1] += count
            bucket[2] += value
        else:
            self.buckets.append([second, count, value])
            self._trim(second)

    def _trim(self, second: int) -> None:
        while self.buckets and self.buckets[0][0] <= second - self.span:
            self.buckets.popleft()

    def rate(self, now: float, started: float) -> float:
        self._trim(int(now))
        count = sum(b[1] for b in self.buckets)
        span = max(1.0, min(float(self.span), now - started))
        return count / span

    def mean(self, now: float) -> float:
        self._trim(int(now))
        count = sum(b[1] for b in self.buckets)
        return sum(b[2] for b in self.buckets) / count if count else 0.0
