"""The worker: reserve -> claim -> start -> (event loop) stream output -> finish -> ack.

Up to ``worker.concurrency`` jobs run at once, and a running job holds no
thread.  The dispatcher thread reserves, in ONE RESERVE, as many jobs as
there are free slots (the queue answers as soon as one is ready, so a lone
job never waits for a batch), claims them in the database in ONE write
transaction (``remora.jobstate.claim_many``: a conditional ``queued`` ->
``running`` update, so a duplicate delivery never runs twice at once), tells
the queue they started in ONE frame, and starts each with its server's
executor on the starter threads (half of ``worker.threads``: a fork, an SSH
connect and handshake block), while the dispatcher reserves the next ones.
From then on the worker's event loop (``remora.executor.loop``: one thread,
one selector over every channel and pipe, timers for timeouts and cancels)
reads their output and hands it to one output writer thread, which stores
it through ``remora.output.JobOutput`` (every job's due output in one
transaction).  When jobs end, a finisher thread takes every end waiting and
records the outcomes together (last output and final statuses in ONE
transaction: ``output.flush_many`` + ``jobstate.finish_many``; one ACK
request; each batch stepped once):

- exit 0 -> ``completed``; exit N -> ``failed`` (error ``exit code N``);
  killed by a signal -> ``failed`` (``killed by signal X``); timeout ->
  ``failed`` (``timeout after Ns``); SSH failure after retries -> ``failed``
  with the SSH error; cancel -> ``canceled``;
- a failure with ``retries`` left goes back to ``queued`` (attempt count and
  each attempt's error kept) and is NACKed with a short backoff delay.

A heartbeat thread TOUCHes every held lease each ``worker.heartbeat_interval``
(the reply carries cancel requests, so a cancel takes effect within about a
second), checks ``Job.cancel_requested`` in the database as a second source,
and records the remote pid of running jobs.  A lease reported ``lost`` (the
worker could not reach the queue for longer than the lease) stops the job:
another worker may already hold it.

A worker that dies (SIGKILL, power loss) stops heartbeating; its leases
expire after ``queue.worker_timeout`` and the jobs are redelivered.  The
worker that receives one finds the row still ``running``: it first kills what
the dead worker left behind: the recorded ``Job.remote_pid`` is the job's
process group and session, killed with ``kill -- -pid`` and ``pkill -s pid``
(over SSH, or locally), but only if that pid is still a session leader whose
environment holds ``REMORA_JOB_ID=<job id>`` (every job gets it), so a reused
pid -- or a local job of a worker on another host -- is never hit.  Then it
runs the job again if retries remain, or
marks it ``failed`` with error ``worker lost``.  Jobs shorter than one
heartbeat have no recorded pid; a non-pty SSH command left running then ends
at its next write to the closed connection (SIGPIPE), a pty one gets SIGHUP
when sshd closes the terminal.

The Worker never installs signal handlers (it runs embedded in ``remora
up``): the CLI calls ``stop()``.  Queue and database outages are logged once
each and retried with backoff; the worker never exits on a transient error.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from remora import jobstate, models, procstats
from remora.config import Settings
from remora.crypto import SecretBox
from remora.errors import RemoraError
from remora.executor.base import JOB_ID_ENV, ErrorKind, ExecRequest, ExecResult, Stream
from remora.executor.loop import EventLoop
from remora.executor.sshpool import SSHPool
from remora.jobstate import Action
from remora.models import Job, Server
from remora.netqueue.client import QueueClient, Reservation
from remora.worker.backoff import Outage
from remora.worker.burst import BurstThreads
from remora.worker.ends import Ends
from remora.worker.held import RESERVE_WAIT, HeldJob, HeldJobs
from remora.worker.servers import WorkerServers
from remora.worker.sink import JobSink, OutputWriter

log = logging.getLogger(__name__)

DISPATCHERS = 1  # threads reserving and claiming (each RESERVE asks for every free slot)
FINISHERS = 2  # threads recording job ends (each takes every end waiting)
RESERVE_BATCH = 256  # most jobs one RESERVE asks for (never more than the free slots)


class Worker:
    """Runs jobs from NetQueue; embeddable (no signal handling; the caller initialised the database)."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        queue_client: QueueClient | None = None,
    ) -> None:
        self.settings = settings
        self.host = socket.gethostname()
        self.id = worker_id or settings.worker.id or f"{self.host}-{os.getpid()}"
        self.queues = list(queues or settings.worker.queues or [settings.queue.name])
        self.concurrency = max(1, concurrency or settings.worker.concurrency)
        threads = max(2, settings.worker.threads)
        # one dispatcher reserves for every free slot at once; starts (forks, SSH handshakes) go to the starters
        self.dispatchers = DISPATCHERS
        self._starter_count = max(1, min(self.concurrency, threads))
        self.loop = EventLoop(name=f"{self.id}-loop", threads=max(2, threads // 4))
        # starts block (a fork; an SSH channel open, and before a server's first job its connect and
        # handshake, mostly waiting for the other side): those of one RESERVE overlap on up to
        # ``threads`` threads, made for the burst and ended after it (remora.worker.burst)
        self._starters = BurstThreads(self._starter_count, f"{self.id}-start")
        self._room = threading.BoundedSemaphore(self.concurrency)  # jobs at once
        self._running = 0  # jobs handed to the event loop and not finished yet
        self._pending_starts = 0  # claimed jobs whose start waits for a start thread (under ``_idle``)
        self._idle = threading.Condition()
        self._start_until = 0.0  # while stopping: claimed jobs still start until then (a graceful stop's deadline)
        self.output_writer: OutputWriter | None = None
        self.queue = queue_client or QueueClient(settings.queue.addr, token=settings.queue_token, name=f"worker {self.id}")
        self._own_queue = queue_client is None
        self.held = HeldJobs(
            self.queue,
            worker_id=self.id,
            host=self.host,
            queues=self.queues,
            concurrency=self.concurrency,
            heartbeat_interval=settings.worker.heartbeat_interval,
            on_beat=self._db_side,
            resources=self.resources,
        )
        self.pool = SSHPool(max_sessions=settings.ssh.max_sessions_per_connection, idle_timeout=settings.ssh.idle_timeout)
        self.secrets = SecretBox.from_settings(settings)
        self.servers = WorkerServers(settings, self.secrets, self.pool)
        self._abandon = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._db_outage = Outage("database")
        self.stats = {"completed": 0, "failed": 0, "canceled": 0, "requeued": 0, "skipped": 0}
        self.ends = Ends(
            self.id,
            settings,
            self.held,
            self.queue,
            count=FINISHERS,  # few: job ends wait together
            stats=self.stats,
            stopping=self._stopping,
            db_retry=self._db_retry,
            recorded=self._recorded,
        )

    def resources(self) -> dict[str, float]:
        """This process's resource figures and its pooled SSH connections (sent with every heartbeat)."""
        figures = procstats.sample()
        figures["ssh_connections"] = self.pool.connection_count() + self.pool.libssh2().connection_count()
        return figures

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._check_data_dir()
        log.info(
            "worker %s: %d jobs at once, queues %s, NetQueue %s", self.id, self.concurrency, ",".join(self.queues), self.settings.queue.addr
        )
        _raise_fd_limit()
        self.output_writer = OutputWriter(f"{self.id}-output", self.loop)
        self.loop.start()
        self.held.start()
        for n in range(self.dispatchers):
            thread = threading.Thread(target=self._slot_loop, name=f"{self.id}-slot-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.ends.start()

    def _check_data_dir(self) -> None:
        """Warn when local jobs run as another user but the data directory is open to others."""
        if not self.settings.worker.local_user.strip() or os.geteuid() != 0:
            return
        try:
            mode = self.settings.data_dir.stat().st_mode & 0o777
        except OSError:
            return
        if mode & 0o077:
            log.warning(
                "data directory %s has mode %o: local jobs run as %s and may look inside; make it private (chmod 700)",
                self.settings.data_dir,
                mode,
                self.settings.worker.local_user,
            )

    def run(self) -> None:
        self.start()
        self._stopped.wait()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def running_jobs(self) -> list[HeldJob]:
        return self.held.running()

    def stop(self, *, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop reserving; let running jobs finish within ``timeout``; cancel, requeue and NACK the rest."""
        if self._stopped.is_set():
            return
        if self._stopping.is_set():  # a stop is already under way: hurry it up
            self._start_until = 0.0
            for active in self.running_jobs():
                active.stop("shutdown")
            return
        grace = self.settings.worker.graceful_shutdown if timeout is None else timeout
        deadline = time.monotonic() + (grace if graceful else 0.0)
        self._start_until = deadline  # a claimed job shows as running: a graceful stop lets it start and finish
        self._stopping.set()
        self.held.stop_fetching()
        if graceful and self.running_jobs():
            log.info("worker %s: waiting up to %.0fs for %d running job(s)", self.id, grace, len(self.running_jobs()))
        self._join_slots(deadline)
        self._start_until = 0.0  # from here on a start still waiting hands its job back
        leftover = self.running_jobs()
        if leftover:
            log.info("worker %s: stopping %d job(s) and handing them back to the queue", self.id, len(leftover))
            for active in leftover:
                active.stop("shutdown")
            self._join_slots(time.monotonic() + self.settings.worker.kill_grace + 15.0)
        self._abandon.set()
        self._join_slots(time.monotonic() + 5.0)
        self.ends.close()
        self._starters.shutdown()
        if self.output_writer is not None:
            self.output_writer.close(5.0)
        self.loop.stop()
        self.held.close()
        if self._own_queue:
            self.queue.close()
        self.pool.close()
        self._stopped.set()
        log.info("worker %s stopped", self.id)

    def _join_slots(self, deadline: float) -> None:
        """Wait for the dispatchers to stop, the starts they handed on to be made and every job on the
        event loop to be finished (or ``deadline``)."""
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._idle:
            while (self._running or self._pending_starts) and time.monotonic() < deadline:
                self._idle.wait(max(0.0, min(0.5, deadline - time.monotonic())))

    # -- the slot loop ----------------------------------------------------------

    def _slot_loop(self) -> None:
        """Reserve as many jobs as there are free slots (one RESERVE), claim and start them; see ``_dispatch``."""
        while True:
            if not self._room.acquire(timeout=RESERVE_WAIT):
                if self._stopping.is_set():
                    return
                continue
            rooms = 1 + self._more_rooms(1)  # each reserved job takes one; a job started on the event loop takes it along
            items = self.held.reserve(rooms, timeout=RESERVE_WAIT)
            # A RESERVE parked while jobs held slots asked for fewer than may be free by the time jobs
            # came (a fan-out right after another): take what else is ready now, for the same claim,
            # rather than after these are claimed and started.
            while items and len(items) == rooms and (more := self._more_rooms(rooms)):
                rooms += more
                items += self.held.reserve(more, timeout=0)
            for _ in range(rooms - len(items)):
                self._room.release()
            if items:
                try:
                    self._dispatch(items)
                except Exception:  # pragma: no cover - a bug: keep the dispatcher alive
                    log.exception("unexpected error while dispatching %d job(s)", len(items))
            elif self._stopping.is_set():
                return

    def _more_rooms(self, taken: int) -> int:
        """Take the free slots there are, up to ``RESERVE_BATCH`` with the ``taken`` ones; how many it took."""
        more = 0
        while taken + more < RESERVE_BATCH and self._room.acquire(blocking=False):
            more += 1
        return more

    def _dispatch(self, items: list[tuple[Reservation, HeldJob]]) -> None:
        """Claim what one RESERVE brought (one transaction), START the claimed jobs (one frame), run them.

        Every job's room is freed here unless the job runs on the event loop (its end frees it).
        The messages of jobs not to run (finished, canceled, held by a live worker) are ACKed in
        the same frame as the START.
        """
        if self._stopping.is_set():
            for reservation, _ in items:
                self._refuse(reservation)
            return
        try:
            claims = jobstate.claim_many([reservation.id for reservation, _ in items], self.id)
            self._db_outage.ok()
        except models.DatabaseError as exc:
            delay = self._db_outage.failed(exc)
            for reservation, _ in items:
                self.held.done(reservation.id, "nack", max(delay, 1.0))
                self._room.release()
            self._stopping.wait(delay)
            return
        runs: list[tuple[Job, HeldJob]] = []
        acks: list[str] = []
        batches: dict[str, None] = {}
        for (reservation, active), claim in zip(items, claims, strict=True):
            if claim.action is Action.TAKE_OVER:  # a lost worker's job: kills its leftovers first (slow), on its own
                self._start_later(self._dispatch_one, reservation, active, claim, refused=functools.partial(self._refuse, reservation))
                continue
            outcome: jobstate.Claim | None
            try:
                outcome = self._claimed(reservation, active, claim)
            except Exception:
                log.exception("job %s: unexpected error; releasing it", reservation.id)
                self.held.done(reservation.id, "nack", 1.0)
                outcome = None
            if outcome is not None and outcome.action is Action.RUN and outcome.job is not None:
                runs.append((outcome.job, active))
                continue
            if outcome is not None:
                log.debug("job %s: %s; dropping the message", reservation.id, outcome.reason)
                self.stats["skipped"] += 1
                self.held.forget(reservation.id)
                acks.append(reservation.id)
                batch_id = getattr(outcome.job, "batch_id", None) if outcome.job is not None else None
                if batch_id:
                    batches[batch_id] = None
            self._room.release()
        flags = self.held.start_many([active for _, active in runs], acks)
        starting = []
        for (job, active), ours in zip(runs, flags, strict=True):
            if ours and self._may_start():
                starting.append((job, active))
                continue
            # the queue handed it back meanwhile (not ours to run), or the worker is stopping at once
            self._hand_back(job, "nack" if ours else "")
        self.servers.prefetch([job.server_id for job, _ in starting])
        later = self._start_at_once(starting)
        for job, active in later:  # on the starters: a fork, an SSH connect may block; the dispatcher reserves on
            self._start_later(self._start, job, active, refused=functools.partial(self._hand_back, job))
        for batch_id in batches:
            self.ends.batch_step(batch_id)

    def _dispatch_one(self, reservation: Reservation, active: HeldJob, claim: jobstate.Claim) -> None:
        """``_dispatch`` for one job, on a starter thread (a lost worker's job: its take-over may block)."""
        try:
            outcome = self._claimed(reservation, active, claim)
            if outcome is None:
                self._room.release()
            elif outcome.action is Action.RUN and outcome.job is not None:
                if self.held.started(active):
                    self._start(outcome.job, active)
                    return
                self._hand_back(outcome.job, "")  # the queue handed it back meanwhile: not ours to NACK
            else:
                log.debug("job %s: %s; dropping the message", reservation.id, outcome.reason)
                self.stats["skipped"] += 1
                self.held.done(reservation.id, "ack")
                self._room.release()
                if outcome.job is not None:
                    self.ends.batch_step(getattr(outcome.job, "batch_id", None))
        except Exception:
            log.exception("job %s: unexpected error; releasing it", reservation.id)
            self.held.done(reservation.id, "nack", 1.0)
            self._room.release()

    def _claimed(self, reservation: Reservation, active: HeldJob, outcome: jobstate.Claim) -> jobstate.Claim | None:
        """The claim's outcome after a lost worker's take-over or a cancel between reserve and claim (None: handled)."""
        if active.reason == "lost":  # the queue may have handed it to another worker: do not run it
            job = outcome.job
            if outcome.action is Action.RUN and job is not None:
                self._db_retry(lambda: jobstate.release(job.id, self.id, job.attempts))
            self.held.done(reservation.id, "nack")
            return None
        try:
            if outcome.action is Action.TAKE_OVER and outcome.job is not None:
                outcome = self._take_over(outcome.job, reservation)
            self._db_outage.ok()
        except models.DatabaseError as exc:
            delay = self._db_outage.failed(exc)
            self.held.done(reservation.id, "nack", max(delay, 1.0))
            return None
        if outcome.action is Action.RUN and active.cancel.is_set():  # canceled between reserve and claim
            assert outcome.job is not None
            self.ends.record([(outcome.job, active, ExecResult(error_kind=ErrorKind.CANCELED.value, error="canceled"), None)])
            return None
        return outcome

    def _may_start(self) -> bool:
        """Whether a claimed job may start now: not while stopping, unless within a graceful stop's deadline."""
        return not self._stopping.is_set() or time.monotonic() < self._start_until

    def _start_later(self, fn: Callable[..., None], *args: Any, refused: Callable[[], None]) -> None:
        """``fn(*args)`` on a start thread, counted as a pending start until it returns (a stop waits for it);
        ``refused()`` when the start threads are shut down already."""

        def counted(*call: Any) -> None:
            try:
                fn(*call)
            finally:
                with self._idle:
                    self._pending_starts -= 1
                    self._idle.notify_all()

        with self._idle:
            self._pending_starts += 1
        try:
            self._starters.submit(counted, *args)
        except RuntimeError:  # the worker stopped meanwhile
            with self._idle:
                self._pending_starts -= 1
            refused()

    def _refuse(self, reservation: Reservation) -> None:
        """A reserved job the worker will not claim or look at after all (it is stopping): NACKed, its room freed."""
        self.held.done(reservation.id, "nack")
        self._room.release()

    def _hand_back(self, job: Job, ack: str = "nack") -> None:
        """A claimed job the worker will not start after all: back to ``queued``, its room freed.

        ``ack``: what the queue is told, "nack" (the worker is stopping), "" when the queue handed the
        message back meanwhile (nothing to tell)."""
        self._db_retry(lambda: jobstate.release(job.id, self.id, job.attempts))
        self.held.done(job.id, ack)
        self._room.release()

    def _start(self, job: Job, active: HeldJob) -> None:
        """Start a claimed job on the event loop; its end frees its room."""
        if not self._may_start():
            self._hand_back(job)
            return
        try:
            self._run(job, active)
        except Exception:
            log.exception("job %s: unexpected error while starting it; releasing it", job.id)
            self.held.done(job.id, "nack", 1.0)
            self._room.release()

    def _take_over(self, job: Job, reservation: Reservation) -> jobstate.Claim:
        """A redelivered job still ``running``: its worker is gone (or, on a first delivery, maybe alive)."""
        if reservation.attempt <= 1 and job.worker and self._worker_alive(job.worker):
            return jobstate.Claim(Action.ACK, f"held by live worker {job.worker}")
        log.warning("job %s: its worker %s was lost (attempt %d)", job.id, job.worker, job.attempts)
        if job.remote_pid:
            self._kill_leftovers(job)
        return jobstate.take_over(job, self.id)

    def _worker_alive(self, worker_id: str) -> bool:
        if worker_id == self.id:
            return False
        try:
            workers = self.held.workers()
        except RemoraError:
            return True  # cannot tell: do not run it twice
        ttl = self.settings.queue.worker_timeout
        return any(w.get("id") == worker_id and float(w.get("heartbeat_age", ttl + 1)) < ttl for w in workers)

    def _kill_leftovers(self, job: Job) -> None:
        server = Server.get_or_none(Server.id == job.server_id)
        if server is None or job.remote_pid is None:
            return
        try:
            killed = self.servers.executor(server).kill_stale(job.remote_pid, f"{JOB_ID_ENV}={job.id}")
            log.info("job %s: leftover process group %d of the lost worker %s", job.id, job.remote_pid, "killed" if killed else "not found")
        except Exception as exc:  # noqa: BLE001 - best effort: never block the takeover
            log.warning("job %s: could not kill leftover process group %d: %s", job.id, job.remote_pid, exc)

    def _start_at_once(self, starting: list[tuple[Job, HeldJob]]) -> list[tuple[Job, HeldJob]]:
        """Start here the jobs whose start waits for nothing (a pooled session has room); the others, to start elsewhere.

        A warm fan-out's 200 starts then take one thread a few milliseconds and wake the event loop
        once, instead of queueing on the start threads, which would take turns at the interpreter's lock.
        """
        later = []
        with self.loop.holding():
            for job, active in starting:
                try:
                    ready = self._may_start() and self.servers.executor(self.servers.row(job.server_id)).starts_at_once(self.loop)
                except Exception:  # noqa: BLE001 - a row or credential problem: the start reports it
                    ready = False
                if ready:
                    self._start(job, active)
                else:
                    later.append((job, active))
        return later

    # -- running one job ---------------------------------------------------------

    def _run(self, job: Job, active: HeldJob) -> bool:
        """Start the job; True when it runs on the event loop, False when it ended at once (already finished)."""
        active.attempt = job.attempts
        sink = JobSink(job.id, self.settings, active, (job.stdout_bytes or 0, job.stderr_bytes or 0), writer=self.output_writer)
        if job.attempts > 1:
            sink.write(Stream.STDERR, f"[remora: attempt {job.attempts}]\n".encode())
        with self._idle:
            self._running += 1

        def ended(result: ExecResult) -> None:  # on the event loop: the rest after the job's last bytes are stored
            self._room.release()  # a dispatcher reserves the next job while this one's outcome is written
            sink.then(self.ends.put, (job, active, result, sink))

        result = self._execute(job, active, sink, ended)
        if result is not None:
            ended(result)
        return True

    def _job_env(self, job: Job) -> tuple[dict[str, str], list[str]]:
        """The job's ``env`` with its encrypted values (``Job.secret_env``) decrypted: only here, at run time.

        Also the secret values themselves: the output is masked with them before it is stored.
        """
        env = {str(k): str(v) for k, v in (job.env or {}).items()}
        if not job.secret_env:
            return env, []
        secret = json.loads(self.secrets.decrypt_str(job.secret_env))
        env.update(secret)
        return env, [str(value) for value in secret.values()]

    def _execute(self, job: Job, active: HeldJob, sink: JobSink, done: Any) -> ExecResult | None:
        """Start the job on the event loop (``done(result)`` when it ends); a result instead when it cannot start."""
        try:
            server = self.servers.row(job.server_id)
            env, secrets = self._job_env(job)
            if secrets:
                sink.mask(secrets)
            request = ExecRequest(
                command=job.command or "",
                args=job.args or "",
                script=job.script,
                shell=job.shell,
                env={JOB_ID_ENV: job.id, **env},
                workdir=job.workdir,
                timeout=float(job.timeout if job.timeout is not None else self.settings.ssh.execution_timeout),
                pty=bool(job.pty),
            )
            try:
                executor = self.servers.executor(server)
            except RemoraError as exc:  # a credential that cannot be decrypted, a PEM file not stored
                return ExecResult(error_kind=ErrorKind.AUTH.value, error=exc.message)
            executor.start(request, sink, active.cancel, self.loop, done)
            return None
        except Exception as exc:
            log.exception("job %s: executor failed", job.id)
            return ExecResult(error_kind=ErrorKind.INTERNAL.value, error=f"internal error: {exc}")

    def _recorded(self, count: int) -> None:
        """``count`` jobs that ran on the event loop left the worker (their outcomes are written)."""
        with self._idle:
            self._running -= count
            self._idle.notify_all()

    # -- dependencies ---------------------------------------------------------------

    def _db_retry(self, fn) -> object:  # type: ignore[no-untyped-def]
        """Run a database write until it succeeds (the lease is kept alive meanwhile) or the worker gives up."""
        while True:
            try:
                value = fn()
                self._db_outage.ok()
                return value
            except models.DatabaseError as exc:
                delay = self._db_outage.failed(exc)
                if self._abandon.wait(delay):
                    log.error("giving up a database write at shutdown: %s", exc)
                    return None

    def _db_side(self, held: dict[str, HeldJob]) -> None:
        running = {k: a for k, a in held.items() if a.attempt}
        if not running:
            return
        try:
            for job_id in jobstate.cancel_requested(list(running)):
                running[job_id].stop("canceled")
            for active in running.values():
                if active.pid and not active.pid_recorded:
                    jobstate.record_pid(active.job_id, self.id, active.attempt, active.pid)
                    active.pid_recorded = True
            self._db_outage.ok()
        except models.DatabaseError as exc:
            self._db_outage.failed(exc)


def _raise_fd_limit() -> None:
    """Every running job holds a few file descriptors (a channel's pipe; a local job's pipes and pidfd): allow the hard limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass
