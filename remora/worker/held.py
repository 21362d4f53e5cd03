"""The jobs a worker holds: its side of NetQueue (reserving for free slots only, starting, acknowledging, heartbeats).

``HeldJobs`` owns every lease (the queue's reservation of a job) the worker holds (docs/dispatch.md):

- a dispatcher reserves only for free slots: with k slots free it sends one
  blocking RESERVE for up to k jobs (``reserve``), which the queue parks
  until a job is ready and answers at once with what is ready then (a lone
  job never waits for a batch to fill).  So a worker never holds a job it
  could not start now: the queue decides what runs next (priority, FIFO,
  per-server limits), and another worker with a free slot gets what this
  one cannot start;
- right after the jobs are claimed in the database the dispatcher tells the
  queue they started, all in one START (``start_many``, pipelined: no round
  trip), carrying the ACKs of the jobs of that RESERVE it will not run.
  Until then a reservation is "unstarted": if this worker's connection
  closes (the process died) the queue hands it back at once;
- NACKs, and ACKs that cannot ride on a START, go to acker threads; ACKs
  waiting together (jobs that finished together: ``ack_many``) go in one
  request (a START carrying only ACKs);
- a heartbeat thread TOUCHes every held lease each ``heartbeat_interval``
  (registering the worker with its resource figures first); a reply of
  ``canceled`` or ``lost`` stops the job, and ``on_beat`` lets the worker do
  its own periodic work (database cancel flags, remote pids).

Queue outages are logged once each (``Outage``) and retried with backoff.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from remora.errors import QueueError, QueueUnavailable
from remora.netqueue.client import QueueClient, Reservation
from remora.worker.backoff import Outage

log = logging.getLogger(__name__)

RESERVE_WAIT = 0.5  # a blocking reserve returns at least this often, so a stop is noticed
ACKERS = 4  # ACKs and NACKs wait for the queue's fsync off the slots' path; several in flight share one
ACK_BATCH = 256  # most ACKs one request carries (a START without jobs, carrying ACKs)


@dataclass
class HeldJob:
    """A job this worker holds (reserved; running once ``attempt`` is set)."""

    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # why cancel was set: "canceled" | "shutdown" | "lost"
    attempt: int = 0
    finishing: bool = False
    pid: int | None = None
    pid_recorded: bool = False

    def stop(self, reason: str) -> None:
        if not self.cancel.is_set() and not self.finishing:
            self.reason = reason
            self.cancel.set()


class HeldJobs:
    """The jobs one worker holds: reservations for free slots, START/ACK/NACK and heartbeats."""

    def __init__(
        self,
        client: QueueClient,
        *,
        worker_id: str,
        host: str,
        queues: list[str],
        concurrency: int,
        heartbeat_interval: float,
        on_beat: Callable[[dict[str, HeldJob]], None] | None = None,
        resources: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.client = client
        self.resources = resources  # the worker's process figures, sent with every beat
        self.worker_id, self.host, self.queues = worker_id, host, queues
        self.concurrency = concurrency
        self.heartbeat_interval = max(0.05, heartbeat_interval)
        self.on_beat = on_beat
        self.outage = Outage(f"NetQueue at {client.addr}")
        self.held: dict[str, HeldJob] = {}
        self.lock = threading.Lock()
        self._acks: queue_mod.Queue[tuple[str, list[str], float] | None] = queue_mod.Queue()
        self._fetching = threading.Event()
        self._beating = threading.Event()
        self._abandon = threading.Event()
        self._threads: dict[str, list[threading.Thread]] = {}
        self._registered = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._fetching.set()
        self._beating.set()
        self._spawn("heartbeat", self._heartbeat_loop)
        for _ in range(ACKERS):
            self._spawn("acker", self._ack_loop)

    def _spawn(self, kind: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"{self.worker_id}-{kind}", daemon=True)
        thread.start()
        self._threads.setdefault(kind, []).append(thread)

    def stop_fetching(self) -> None:
        """Reserve no more (a reserve already parked returns within RESERVE_WAIT; its job is handed back)."""
        self._fetching.clear()

    def close(self, timeout: float = 10.0) -> None:
        """Send the ACK/NACKs still pending (up to ``timeout``), then stop the heartbeat."""
        for _ in self._threads.get("acker", []):
            self._acks.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads.get("acker", []):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._abandon.set()
        self._beating.clear()
        for thread in self._threads.get("heartbeat", []):
            thread.join(5.0)
        self.deregister()

    def deregister(self) -> None:
        """Tell the queue this worker is leaving (best effort: a worker it never hears from again ages out)."""
        if not self._registered:
            return
        try:
            self.client.deregister_worker(self.worker_id)
            self._registered = False
        except (QueueUnavailable, QueueError, OSError) as exc:
            log.info("could not deregister from the queue (it forgets this worker later): %s", exc)

    # -- slots' side ----------------------------------------------------------------

    @property
    def fetching(self) -> bool:
        return self._fetching.is_set()

    def reserve(self, count: int, timeout: float) -> list[tuple[Reservation, HeldJob]]:
        """Reserve up to ``count`` jobs (the slots free now) in one RESERVE; [] when none came within ``timeout``.

        The queue answers as soon as one job is ready (a lone job never waits for a batch to fill) and
        still applies priorities and per-server limits to every job it hands out.
        """
        if not self.fetching:
            return []
        try:
            got = self.client.reserve(self.queues, timeout=timeout, count=max(1, count), worker_id=self.worker_id)
            self.outage.ok()
        except (QueueUnavailable, QueueError, OSError) as exc:
            self._abandon.wait(self.outage.failed(exc))
            return []
        if got and not self.fetching:  # stopping: hand them straight back
            for reservation in got:
                self._acks.put(("nack", [reservation.id], 0.0))
            return []
        items = [(reservation, HeldJob(reservation.id)) for reservation in got]
        with self.lock:
            for reservation, active in items:
                self.held[reservation.id] = active
        return items

    def start_many(self, actives: list[HeldJob], acks: list[str] | tuple[str, ...] = ()) -> list[bool]:
        """Tell the queue these jobs started, in one pipelined START that also carries ``acks``.

        One flag per job: False when it is not ours any more (do not run it).
        """
        job_ids = [active.job_id for active in actives]
        if not job_ids:
            if acks:
                self._acks.put(("ack", list(acks), 0.0))
            return []
        try:
            self.client.start_nowait(job_ids, worker_id=self.worker_id, acks=tuple(acks))
            return [True] * len(job_ids)
        except (QueueUnavailable, QueueError, OSError):
            if acks:
                self._acks.put(("ack", list(acks), 0.0))
        try:  # the connection that reserved them broke: ask on a new one whether they are still ours
            flags = self.client.start(job_ids, worker_id=self.worker_id)
            return [bool(flag) for flag in flags] + [False] * (len(job_ids) - len(flags))
        except (QueueUnavailable, QueueError, OSError) as exc:
            log.warning("%d job(s): cannot tell the queue they started (%s); handing them back", len(job_ids), exc)
            return [False] * len(job_ids)

    def started(self, active: HeldJob) -> bool:
        """``start_many`` for one job."""
        return self.start_many([active])[0]

    def forget(self, job_id: str) -> None:
        """The job leaves this worker and the caller tells the queue itself (e.g. its ACK rides on a START)."""
        with self.lock:
            self.held.pop(job_id, None)

    def done(self, job_id: str, op: str, delay: float = 0.0) -> None:
        """The job leaves this worker: ``op`` ("ack", "nack", or "" for nothing) goes to the ackers."""
        with self.lock:
            self.held.pop(job_id, None)
        if op:
            self._acks.put((op, [job_id], delay))

    def ack_many(self, job_ids: list[str]) -> None:
        """These jobs leave this worker, ACKed in one request (a START carrying only ACKs, not waited for)."""
        if not job_ids:
            return
        with self.lock:
            for job_id in job_ids:
                self.held.pop(job_id, None)
        try:  # pipelined: the finisher waits for neither the round trip nor the queue's fsync
            self.client.start_nowait([], worker_id=self.worker_id, acks=tuple(job_ids))
        except (QueueUnavailable, QueueError, OSError):
            self._acks.put(("ack", list(job_ids), 0.0))  # the ackers retry it on a new connection

    def running(self) -> list[HeldJob]:
        with self.lock:
            return [a for a in self.held.values() if a.attempt]

    def workers(self) -> list[dict]:
        return self.client.workers()

    # -- threads --------------------------------------------------------------------

    def _ack_loop(self) -> None:
        while True:
            item = self._acks.get()
            if item is None:
                return
            op, job_ids, delay = item
            acks = list(job_ids)
            while op == "ack" and len(acks) < ACK_BATCH:  # ACKs waiting together go in one request
                try:
                    more = self._acks.get_nowait()
                except queue_mod.Empty:
                    break
                if more is None or more[0] != "ack":
                    self._acks.put(more)  # type: ignore[arg-type]  # for another acker
                    break
                acks.extend(more[1])
            for _ in range(5):
                try:
                    if op == "ack" and len(acks) > 1:
                        self.client.ack_many(acks)
                    elif op == "ack":
                        self.client.ack(acks[0])
                    else:
                        for job_id in acks:
                            self.client.nack(job_id, delay=delay)
                    self.outage.ok()
                    break
                except (QueueUnavailable, OSError) as exc:
                    if self._abandon.wait(self.outage.failed(exc)):
                        break
                except QueueError as exc:
                    log.warning("queue refused %s of job(s) %s: %s", op, ", ".join(acks[:5]), exc)
                    break

    def _heartbeat_loop(self) -> None:
        while self._beating.is_set():
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed")
            self._abandon.wait(self.heartbeat_interval)

    def beat(self) -> None:
        with self.lock:
            held = dict(self.held)
        try:
            # every beat registers again: the queue shows the worker's current resource figures
            resources = self.resources() if self.resources is not None else None
            self.client.register_worker(self.worker_id, host=self.host, concurrency=self.concurrency, resources=resources)
            self._registered = True
            replies = self.client.touch(list(held), worker_id=self.worker_id)
            self.outage.ok()
        except (QueueUnavailable, QueueError, OSError) as exc:
            self._registered = False  # register again afterwards: the queue may have restarted
            self._abandon.wait(min(self.outage.failed(exc), 1.0))
            return
        for job_id, state in replies.items():
            active = held.get(job_id)
            if active is None or active.finishing:
                continue
            if state == "canceled":
                active.stop("canceled")
            elif state == "lost" and (not active.attempt or self.held.get(job_id) is active):
                log.warning("job %s: lease lost (no heartbeat reached the queue in time); stopping it", job_id)
                active.stop("lost")
        if self.on_beat:
            self.on_beat(held)
