"""The worker's side of NetQueue: reserving ahead, acknowledging behind, heartbeats.

``LeaseKeeper`` owns every lease a worker holds:

- a fetcher thread reserves jobs ahead of the slots into a small local buffer
  (at most ``concurrency + prefetch`` leases held at once), so a slot that
  finishes a job starts the next without waiting for a queue round trip;
- ACK and NACK go through a queue to two acker threads, so a slot never
  waits for the queue's fsync either (an ACK lost in a crash is harmless: the
  job is redelivered, its row is already final, and it is dropped);
- a heartbeat thread TOUCHes every held lease each ``heartbeat_interval``
  (registering the worker first, and again after an outage); a reply of
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

log = logging.getLogger(__name__)

RESERVE_WAIT = 0.5  # a blocking reserve returns at least this often, so a stop is noticed
MAX_BACKOFF = 5.0
ACKERS = 4  # acks wait for the queue's fsync; several in flight share one (group commit)


@dataclass
class Active:
    """A job this worker holds (buffered; running once ``attempt`` is set)."""

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


class Outage:
    """Logs a failing dependency once per outage and its recovery once; hands out backoff delays."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self.backoff = 0.1
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> float:
        with self._lock:
            if not self.down:
                self.down = True
                log.warning("%s unavailable: %s; retrying with backoff", self.what, exc)
            delay, self.backoff = self.backoff, min(self.backoff * 2, MAX_BACKOFF)
            return delay

    def ok(self) -> None:
        if self.down:
            with self._lock:
                if self.down:
                    self.down = False
                    log.info("%s reachable again", self.what)
        self.backoff = 0.1


class LeaseKeeper:
    """Reserve-ahead buffer, asynchronous ACK/NACK and heartbeats for one worker."""

    def __init__(
        self,
        client: QueueClient,
        *,
        worker_id: str,
        host: str,
        queues: list[str],
        concurrency: int,
        prefetch: int,
        heartbeat_interval: float,
        on_beat: Callable[[dict[str, Active]], None] | None = None,
    ) -> None:
        self.client = client
        self.worker_id, self.host, self.queues = worker_id, host, queues
        self.concurrency, self.prefetch = concurrency, max(0, prefetch)
        self.heartbeat_interval = max(0.05, heartbeat_interval)
        self.on_beat = on_beat
        self.outage = Outage(f"NetQueue at {client.addr}")
        self.held: dict[str, Active] = {}
        self.lock = threading.Lock()
        self._capacity = threading.Condition(self.lock)
        self._buffer: queue_mod.Queue[tuple[Reservation, Active]] = queue_mod.Queue()
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
        self._spawn("fetcher", self._fetch_loop)
        for _ in range(ACKERS):
            self._spawn("acker", self._ack_loop)

    def _spawn(self, kind: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"{self.worker_id}-{kind}", daemon=True)
        thread.start()
        self._threads.setdefault(kind, []).append(thread)

    def stop_fetching(self) -> None:
        """Reserve no more; hand every buffered (not yet started) job back to the queue."""
        self._fetching.clear()
        with self._capacity:
            self._capacity.notify_all()
        for thread in self._threads.get("fetcher", []):
            thread.join(RESERVE_WAIT + 5.0)
        while True:
            try:
                reservation, _ = self._buffer.get_nowait()
            except queue_mod.Empty:
                break
            self.done(reservation.id, "nack")

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

    # -- slots' side ----------------------------------------------------------------

    @property
    def fetching(self) -> bool:
        return self._fetching.is_set()

    def next(self, timeout: float) -> tuple[Reservation, Active] | None:
        try:
            return self._buffer.get(timeout=timeout)
        except queue_mod.Empty:
            return None

    def done(self, job_id: str, op: str, delay: float = 0.0) -> None:
        """The job leaves this worker: queue its ``ack`` or ``nack`` and free its place."""
        with self._capacity:
            self.held.pop(job_id, None)
            self._capacity.notify_all()
        self._acks.put((op, job_id, delay))

    def running(self) -> list[Active]:
        with self.lock:
            return [a for a in self.held.values() if a.attempt]

    def workers(self) -> list[dict]:
        return self.client.workers()

    # -- threads --------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        limit = self.concurrency + self.prefetch
        while self._fetching.is_set():
            with self._capacity:
                want = limit - len(self.held)
                if want <= 0:
                    self._capacity.wait(0.5)
                    continue
            try:
                got = self.client.reserve(self.queues, timeout=RESERVE_WAIT, count=want, worker_id=self.worker_id)
                self.outage.ok()
            except (QueueUnavailable, QueueError, OSError) as exc:
                time.sleep(self.outage.failed(exc))
                continue
            for reservation in got:
                active = Active(reservation.id)
                with self.lock:
                    self.held[reservation.id] = active
                self._buffer.put((reservation, active))

    def _ack_loop(self) -> None:
        while True:
            item = self._acks.get()
            if item is None:
                return
            op, job_id, delay = item
            fn = self.client.ack if op == "ack" else self.client.nack
            for _ in range(5):
                try:
                    if op == "ack":
                        fn(job_id)
                    else:
                        fn(job_id, delay=delay)
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
            if not self._registered:
                self.client.register_worker(self.worker_id, host=self.host, concurrency=self.concurrency)
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
