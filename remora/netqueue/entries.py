"""NetQueue's data: job states, journal kinds, the Entry record, per-queue indexes, worker registry entries.

An ``Entry`` is the queue's record of one job (id, queue, priority, body,
lease): not the database's ``remora.models.Job``.  Kept apart from the
engine's logic so the write-ahead log and the engine share one definition of
an entry.  ``Entry`` and friends use ``__slots__``:
100,000 ready jobs must fit in tens of MiB (a body logged by the write-ahead
log is read back from it, not kept: ``Entry.body`` is then its place there).
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

Journal = Callable[[int, "Entry", Any], None]
WORKER_ACTIVE_WINDOW = 30.0  # a worker heard from within this many seconds is active
WORKER_FORGET_FACTOR = 10  # a worker silent for this many active windows, holding no lease, is forgotten


class QueueFullError(Exception):
    """A PUT would take a queue past max_size (nothing was stored)."""

    def __init__(self, queue: str, max_size: int) -> None:
        super().__init__(f"queue {queue!r} holds {max_size} waiting jobs (max_size)")
        self.queue = queue


_SPECS: dict[tuple[float, int], tuple[float, int]] = {}  # (ttr, max_attempts): one tuple per distinct pair


def _spec(ttr: float, max_attempts: int) -> tuple[float, int]:
    key = (ttr, max_attempts)
    spec = _SPECS.get(key)
    if spec is None:
        if len(_SPECS) >= 4096:
            return key
        spec = _SPECS[key] = key
    return spec


class Entry:
    """One job.  Memory is the budget (100,000 ready jobs in tens of MiB): 12 slots, 128 bytes a job.

    Fields read on every PUT and RESERVE are plain slots; the rest share slots behind properties:
    ``ttr`` and ``max_attempts`` (one interned pair, ``spec``), ``attempt`` and ``expired`` (one int,
    ``counts``: both are u16 in the log), ``cancel`` and ``blocked`` (bits of ``flags``), and
    ``note``: ``(worker, since)`` of a reserved job, the ``reason`` of a dead one (a job has a
    worker only while reserved and a reason only while dead; the getters say None otherwise).
    """

    __slots__ = (
        "at",
        "body",
        "counts",
        "created",
        "flags",
        "group",
        "id",
        "note",
        "priority",
        "queue",
        "spec",
        "state",
    )

    def __init__(self, job_id: str, queue: str, priority: int, ttr: float, max_attempts: int, body: bytes | int, created: float) -> None:
        self.id = job_id
        self.queue = queue
        self.priority = priority
        self.spec = _spec(ttr, max_attempts)
        self.body = body  # or, once logged, where the log holds it (``WriteAheadLog.body``): read with ``Engine.body``
        self.created = created
        self.state = DELETED
        self.counts = 0
        self.flags = 0
        self.at = created
        self.note: tuple[str | None, float] | str | None = None
        self.group: Group | None = None  # its concurrency group (e.g. the server it runs on)

    @property
    def ttr(self) -> float:
        return self.spec[0]

    @ttr.setter
    def ttr(self, value: float) -> None:
        self.spec = _spec(value, self.spec[1])

    @property
    def max_attempts(self) -> int:
        return self.spec[1]

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self.spec = _spec(self.spec[0], value)

    @property
    def attempt(self) -> int:
        """Deliveries so far."""
        return self.counts & 0xFFFF

    @attempt.setter
    def attempt(self, value: int) -> None:
        self.counts = (self.counts & ~0xFFFF) | min(value, 0xFFFF)

    @property
    def expired(self) -> int:
        """Lease expiries so far (the ``max_attempts``-th dead-letters the job)."""
        return self.counts >> 16

    @expired.setter
    def expired(self, value: int) -> None:
        self.counts = min(value, 0xFFFF) << 16 | (self.counts & 0xFFFF)

    @property
    def worker(self) -> str | None:
        """The worker holding a reserved job (None: none named, or not reserved)."""
        note = self.note
        return note[0] if self.state == RESERVED and note.__class__ is tuple else None  # type: ignore[index]

    @worker.setter
    def worker(self, value: str | None) -> None:
        if self.state == RESERVED:
            self.note = (value, self.since)

    @property
    def since(self) -> float:
        """ "Ready since" of a reserved job: where it goes back if handed back unstarted."""
        note = self.note
        return note[1] if note.__class__ is tuple else self.created  # type: ignore[index,return-value]

    @since.setter
    def since(self, value: float) -> None:
        if self.state == RESERVED:
            self.note = (self.worker, value)

    @property
    def reason(self) -> str | None:
        """Why a dead job died."""
        note = self.note
        return note if self.state == DEAD and note.__class__ is str else None  # type: ignore[return-value]

    @reason.setter
    def reason(self, value: str | None) -> None:
        if value is not None or self.state == DEAD:
            self.note = value

    @property
    def cancel(self) -> bool:
        """A reserved job flagged by CANCEL: deleted, not requeued, when handed back."""
        return bool(self.flags & 1)

    @cancel.setter
    def cancel(self, value: bool) -> None:
        self.flags = self.flags | 1 if value else self.flags & ~1

    @property
    def blocked(self) -> bool:
        """Ready, but set aside while its group is at its limit."""
        return bool(self.flags & 2)

    @blocked.setter
    def blocked(self, value: bool) -> None:
        self.flags = self.flags | 2 if value else self.flags & ~2

    def __repr__(self) -> str:
        return f"Entry({self.id!r}, {self.queue!r}, p{self.priority}, {STATE_NAMES[self.state]}, attempt={self.attempt})"


class QueueIndex:
    __slots__ = ("name", "ndead", "ndelayed", "nready", "nreserved", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: list[deque[Entry]] = [deque() for _ in range(PRIORITIES)]
        self.nready = self.ndelayed = self.nreserved = self.ndead = 0

    def counts(self) -> dict[str, int]:
        return {"ready": self.nready, "delayed": self.ndelayed, "reserved": self.nreserved, "dead": self.ndead}


class Group:
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
        self.blocked: list[deque[Entry]] = [deque() for _ in range(PRIORITIES)]

    def full(self) -> bool:
        return 0 < self.limit <= self.held

    def block(self, job: Entry) -> None:
        """Set a ready job aside while the group is full, in "ready since" order within its priority."""
        job.blocked = True
        self.nblocked += 1
        insert_ordered(self.blocked[job.priority - 1], job)

    def unblock(self) -> list[Entry]:
        """Take the oldest best-priority blocked jobs, one per free place (they go back to their queues)."""
        room = self.limit - self.held if self.limit else self.nblocked
        out: list[Entry] = []
        for dq in self.blocked:
            while room > 0 and dq:
                job = dq.popleft()
                if not job.blocked:
                    continue  # stale: deleted or moved while set aside
                job.blocked = False
                self.nblocked -= 1
                room -= 1
                out.append(job)
            if room <= 0 or not self.nblocked:
                break
        return out


class WorkerInfo:
    __slots__ = ("concurrency", "done", "failed", "host", "id", "jobs", "last_heartbeat", "registered", "resources")

    def __init__(self, worker_id: str, now: float) -> None:
        self.id = worker_id
        self.host = ""
        self.concurrency = 0
        self.last_heartbeat = now
        self.registered = now
        self.jobs: set[str] = set()
        self.done = 0
        self.failed = 0
        self.resources: dict[str, float] | None = None  # the worker's process figures, from its last REGISTER


class Workers(dict[str, WorkerInfo]):
    """The workers the queue has heard from (RESERVE with a worker id, TOUCH, REGISTER), by id.

    ``active_window``: a worker heard from within this many seconds is active
    (``queue.health_check_interval``); one silent for ``WORKER_FORGET_FACTOR`` windows and
    holding no lease is forgotten (``prune``: before every listing and STATS).  A worker that
    stops cleanly deregisters and leaves at once.
    """

    active_window = WORKER_ACTIVE_WINDOW

    def seen(self, worker_id: str, now: float) -> WorkerInfo:
        """The worker's entry (made on first sight), its heartbeat set to ``now``."""
        info = self.get(worker_id)
        if info is None:
            info = self[worker_id] = WorkerInfo(worker_id, now)
        info.last_heartbeat = now
        return info

    def active(self, now: float) -> int:
        return sum(1 for w in self.values() if now - w.last_heartbeat <= self.active_window)

    @property
    def forget_after(self) -> float:
        return WORKER_FORGET_FACTOR * self.active_window

    def prune(self, now: float) -> Workers:
        """Forget the workers silent longer than ``forget_after`` that hold no lease; returns self."""
        bound = self.forget_after
        for wid, info in list(self.items()):
            if not info.jobs and now - info.last_heartbeat > bound:
                del self[wid]
        return self

    def listing(self, now: float) -> list[dict[str, Any]]:
        """Every worker as the WORKERS reply shows it; a silent worker without leases is forgotten first."""
        self.prune(now)
        return [
            {
                "id": w.id,
                "host": w.host,
                "concurrency": w.concurrency,
                "last_heartbeat": w.last_heartbeat,
                "heartbeat_age": round(max(0.0, now - w.last_heartbeat), 3),
                "active": now - w.last_heartbeat <= self.active_window,
                "jobs": sorted(w.jobs),
                "done": w.done,
                "failed": w.failed,
                "resources": w.resources,
            }
            for w in self.values()
        ]


class RateWindow:
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


def insert_ordered(dq: deque[Entry], job: Entry, *, front: bool = False) -> None:
    """Insert ``job`` into a deque ordered by ``at`` (O(1) at either end, a scan from the chosen end otherwise)."""
    at = job.at
    if not dq or (front and at <= dq[0].at) or (not front and dq[-1].at <= at):
        (dq.appendleft if front else dq.append)(job)
        return
    if not front and at < dq[0].at:
        dq.appendleft(job)
        return
    if front and dq[-1].at <= at:
        dq.append(job)
        return
    if front:
        i = 0
        while dq[i].at <= at:
            i += 1
    else:
        i = len(dq)
        while dq[i - 1].at > at:
            i -= 1
    dq.insert(i, job)


def replay(jobs: dict[str, Entry], kind: int, job_id: str, arg: Any = None) -> bool:
    """Apply one logged change (a journal record) to the entry's fields only; False when it names no live entry.

    Recovery replays every record this way, then ``Engine.rebuild`` recomputes the indexes."""
    job = jobs.get(job_id)
    if job is None:
        return False
    if kind == J_RESERVE:
        job.state, job.attempt, job.note = RESERVED, job.attempt + 1, (arg or None, job.at)
    elif kind == J_DELETE:
        job.state = DELETED
        del jobs[job_id]
    elif kind == J_RELEASE:
        job.state, job.at, job.worker, job.cancel = (DELAYED if arg[0] else READY), arg[1], None, False
    elif kind == J_EXPIRE:
        job.expired += 1
        job.worker = None
        if job.cancel:
            job.state = DELETED
            del jobs[job_id]
        elif job.expired >= job.max_attempts:
            job.state, job.at, job.reason = DEAD, arg, "lease expired"
        else:
            job.state, job.at = READY, arg
    elif kind == J_KICK:
        job.state, job.at, job.expired, job.reason = READY, arg, 0, None
    elif kind == J_PRIORITY:
        job.priority, job.at = arg
    elif kind == J_PROMOTE:
        job.state, job.at = READY, arg
    elif kind == J_CANCEL:
        job.cancel = True
    return True
