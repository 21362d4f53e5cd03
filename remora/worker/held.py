"""The jobs a worker holds: its side of NetQueue (reserving for free slots only, starting, acknowledging, heartbeats).

``HeldJobs`` owns every lease (the queue's reservation of a job) the worker holds (docs/dispatch.md):

- a slot reserves only when it is free: one job at a time, with a blocking
  RESERVE that the queue parks until a job is ready.  A slot whose job ends
  sends its next RESERVE as soon as the result is known (``reserve_early``),
  so the reply travels while the outcome is written to the database; without
  one, ACK and RESERVE go together (ACK_RESERVE).  So a worker never holds a
  job it could not start now (but for those few milliseconds): the queue
  decides what runs next (priority, FIFO, per-server limits), and another
  worker with a free slot gets what this one cannot start;
- right after a job is claimed in the database the slot tells the queue it
  started (START, pipelined: no round trip), carrying the ACK of the slot's
  previous job.  Until then the reservation is "unstarted": if this worker's
  connection closes (the process died) the queue hands it back at once;
- NACKs, and ACKs that cannot ride on a START, go to acker threads; ACKs
  waiting together go in one request (a START carrying only ACKs);
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
from remora.netqueue.client import PendingReserve, QueueClient, Reservation
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
    after: tuple[str, float] | None = None  # what the queue hears when the job leaves: ("ack" | "nack" | "", delay)
    following: PendingReserve | None = None  # the slot's next RESERVE, sent as this job ended
    ack_with_start: str = ""  # the slot's previous job: ACKed together with this job's START

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
        self._acks: queue_mod.Queue[tuple[str, str, float] | None] = queue_mod.Queue()
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

    def reserve_early(self, active: HeldJob, timeout: float) -> None:
        """The job is ending (its result is known; its row is about to be written): send the slot's next RESERVE now.

        Its reply travels while the slot writes the outcome, so the next job starts without waiting for a
        round trip and the queue's fsync.  The job reserved is started a few milliseconds later.
        """
        if self.fetching and active.following is None:
            try:
                active.following = self.client.reserve_later(self.queues, timeout=timeout, count=1, worker_id=self.worker_id)
            except (QueueUnavailable, QueueError, OSError):
                active.following = None

    def next(self, previous: HeldJob | None, timeout: float) -> tuple[Reservation, HeldJob] | None:
        """Finish the slot's previous job with the queue and reserve one job for the slot (None: none came).

        An ACK and the next RESERVE travel together (ACK_RESERVE), unless the RESERVE went out early
        (``reserve_early``): the ACK then rides on the next job's START when that job's reservation
        has already arrived, else goes to the ackers at once.  A NACK always goes to the ackers.
        """
        ack = ""
        following = None
        if previous is not None:
            with self.lock:
                self.held.pop(previous.job_id, None)
            op, delay = previous.after or ("nack", 0.0)
            following, previous.following = previous.following, None
            if op == "ack" and self.fetching and following is None:
                ack = previous.job_id
            elif op == "ack" and following is not None and following.answered:
                ack = previous.job_id  # a next job is (probably) there: the ACK goes with its START
            elif op:
                self._acks.put((op, previous.job_id, delay))
        if following is not None:
            item = self._take(following)
            if item is None:
                if ack:
                    self._acks.put(("ack", ack, 0.0))
            else:
                item[1].ack_with_start = ack
            return item
        if not self.fetching:
            if ack:
                self._acks.put(("ack", ack, 0.0))
            return None
        try:
            if ack:
                got = self.client.ack_reserve(ack, self.queues, timeout=timeout, count=1, worker_id=self.worker_id)
            else:
                got = self.client.reserve(self.queues, timeout=timeout, count=1, worker_id=self.worker_id)
            self.outage.ok()
        except (QueueUnavailable, QueueError, OSError) as exc:
            if ack:
                self._acks.put(("ack", ack, 0.0))  # perhaps done already: a second ACK is harmless
            self._abandon.wait(self.outage.failed(exc))
            return None
        return self._hold(got)

    def _take(self, following: PendingReserve) -> tuple[Reservation, HeldJob] | None:
        try:
            got = following()
            self.outage.ok()
        except (QueueUnavailable, QueueError, OSError) as exc:
            self._abandon.wait(self.outage.failed(exc))
            return None
        if got and not self.fetching:  # stopping: hand it straight back
            self._acks.put(("nack", got[0].id, 0.0))
            return None
        return self._hold(got)

    def _hold(self, got: list[Reservation]) -> tuple[Reservation, HeldJob] | None:
        if not got:
            return None
        reservation = got[0]
        active = HeldJob(reservation.id)
        with self.lock:
            self.held[reservation.id] = active
        return reservation, active

    def started(self, active: HeldJob) -> bool:
        """Tell the queue the job started (pipelined, with the slot's previous ACK); False: not ours any more, do not run it."""
        job_id = active.job_id
        ack, active.ack_with_start = active.ack_with_start, ""
        try:
            self.client.start_nowait([job_id], worker_id=self.worker_id, acks=(ack,) if ack else ())
            return True
        except (QueueUnavailable, QueueError, OSError):
            if ack:
                self._acks.put(("ack", ack, 0.0))
        try:  # the connection that reserved it broke: ask on a new one whether it is still ours
            return self.client.start([job_id], worker_id=self.worker_id) == [True]
        except (QueueUnavailable, QueueError, OSError) as exc:
            log.warning("job %s: cannot tell the queue it started (%s); handing it back", job_id, exc)
            return False

    def done(self, job_id: str, op: str, delay: float = 0.0, *, alone: bool = False) -> None:
        """The job leaves this worker: ``op`` ("ack", "nack", or "" for nothing) is sent with the slot's next reserve.

        ``alone``: no slot reserves after it (a job that ran on the event loop): it goes to the ackers now.
        """
        with self.lock:
            active = self.held.pop(job_id, None)
        if active is not None and alone:
            active.after = None
            if op:
                self._acks.put((op, job_id, delay))
        elif active is not None:
            active.after = (op, delay)
            if active.ack_with_start:  # never started: the previous job's ACK goes on its own
                self._acks.put(("ack", active.ack_with_start, 0.0))
                active.ack_with_start = ""
        elif op:
            self._acks.put((op, job_id, delay))

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
            op, job_id, delay = item
            acks = [job_id]
            while op == "ack" and len(acks) < ACK_BATCH:  # ACKs waiting together go in one request
                try:
                    more = self._acks.get_nowait()
                except queue_mod.Empty:
                    break
                if more is None or more[0] != "ack":
                    self._acks.put(more)  # type: ignore[arg-type]  # for another acker
                    break
                acks.append(more[1])
            for _ in range(5):
                try:
                    if op == "ack" and len(acks) > 1:
                        self.client.ack_many(acks)
                    elif op == "ack":
                        self.client.ack(job_id)
                    else:
                        self.client.nack(job_id, delay=delay)
                    self.outage.ok()
                    break
                except (QueueUnavailable, OSError) as exc:
                    if self._abandon.wait(self.outage.failed(exc)):
                        break
                except QueueError as exc:
                    log.warning("queue refused %s of job %s: %s", op, job_id, exc)
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
