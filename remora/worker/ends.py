"""A worker's job ends: the finisher threads that record what the jobs that ended came to.

A job that ends on the event loop is handed here (``Ends.put``) once its last
bytes are with the output writer.  Each finisher takes every end waiting (up
to ``FINISH_BATCH``) and records them together (``Ends.record``):

- a job stopped by the worker's shutdown goes back to ``queued`` (its attempt
  does not count) and is NACKed;
- a failure with ``retries`` left goes back to ``queued`` (attempt count and
  each attempt's error kept) and is NACKed with a short backoff delay;
- every other job gets its final status (``outcome_of``): the last output
  and the final statuses of all of them in ONE transaction
  (``output.flush_many`` + ``jobstate.finish_many``), then one ACK request,
  and each batch among them stepped once (``Ends.batch_step``).
"""

from __future__ import annotations

import functools
import logging
import queue as queue_mod
import threading
from collections.abc import Callable, Sequence
from typing import Any

from remora import jobmessage, jobstate
from remora.config import Settings
from remora.executor.base import ErrorKind, ExecResult
from remora.models import Job, JobStatus
from remora.netqueue.client import QueueClient
from remora.output import JobOutput, flush_many
from remora.worker.held import HeldJob, HeldJobs
from remora.worker.sink import JobSink

log = logging.getLogger(__name__)

FINISH_BATCH = 256  # most job ends a finisher records in one transaction

End = tuple[Job, HeldJob, ExecResult, JobSink | None]


class Ends:
    """The job ends of one worker, recorded by ``count`` finisher threads."""

    def __init__(
        self,
        worker_id: str,
        settings: Settings,
        held: HeldJobs,
        queue: QueueClient,
        *,
        count: int,
        stats: dict[str, int],
        stopping: threading.Event,
        db_retry: Callable[..., Any],
        recorded: Callable[[int], None],
    ) -> None:
        """``db_retry`` runs a database write until it succeeds; ``recorded(n)``: n jobs left the worker."""
        self.worker_id = worker_id
        self.settings = settings
        self.held = held
        self.queue = queue
        self.count = count
        self.stats = stats
        self.stopping = stopping
        self.db_retry = db_retry
        self.recorded = recorded
        self.waiting: queue_mod.SimpleQueue[End | None] = queue_mod.SimpleQueue()

    def start(self) -> None:
        for n in range(self.count):
            threading.Thread(target=self._loop, name=f"{self.worker_id}-finish-{n}", daemon=True).start()

    def put(self, end: End) -> None:
        self.waiting.put(end)

    def close(self) -> None:
        """The finishers stop once they took what waits before this."""
        for _ in range(self.count):
            self.waiting.put(None)

    def _loop(self) -> None:
        """A finisher: takes every job end waiting (up to FINISH_BATCH) and records them together."""
        while True:
            first = self.waiting.get()
            if first is None:
                return
            group = [first]
            while len(group) < FINISH_BATCH:
                try:
                    more = self.waiting.get_nowait()
                except queue_mod.Empty:
                    break
                if more is None:
                    self.waiting.put(None)  # for another finisher
                    break
                group.append(more)
            try:
                self.record(group)
            except Exception:
                log.exception("%d job(s): unexpected error while finishing them; releasing them", len(group))
                for job, *_ in group:
                    self.held.done(job.id, "nack", 1.0)
            finally:
                self.recorded(len(group))

    def record(self, group: Sequence[End]) -> None:
        """Store the output, write the outcomes (retrying while the database is down), then ACK or NACK.

        Jobs that ended together and reach a final status have their last output and their final
        statuses written in ONE transaction (``output.flush_many`` + ``jobstate.finish_many``), then
        are ACKed in one request, and each batch among them is stepped once.  A shutdown's release
        and a retry's requeue are written job by job.
        """
        me = self.worker_id
        ends: list[tuple[Job, JobStatus, dict[str, Any], JobSink | None, JobOutput | None]] = []
        for job, active, result, sink in group:
            active.finishing = True
            output = sink.last_write() if sink is not None else None
            if active.reason == "shutdown":
                if sink is not None:
                    sink.close()
                self.db_retry(lambda job=job: jobstate.release(job.id, me, job.attempts))
                self.stats["requeued"] += 1
                self.held.done(job.id, "nack")
                continue
            status, error = outcome_of(result, active.reason)
            extra: dict[str, Any] = {
                "error": error,
                "exit_code": result.exit_code,
                "signal": result.signal,
                "remote_pid": result.remote_pid,
            }
            if result.attempt_errors:
                ssh_errors = [jobstate.attempt_error(job.attempts, e) for e in result.attempt_errors]
                extra["attempt_errors"] = [*(job.attempt_errors or []), *ssh_errors]
            if status is JobStatus.FAILED and job.attempts <= job.retries and not self.stopping.is_set():
                if sink is not None:
                    sink.close()
                extra.pop("error")
                self.db_retry(lambda job=job, extra=extra, error=error: jobstate.requeue(job.id, me, job.attempts, error, **extra))
                self.stats["requeued"] += 1
                delay = min(1.0 * job.attempts, 10.0)
                log.info("job %s: attempt %d failed (%s); retrying in %.0fs", job.id, job.attempts, error, delay)
                self.held.done(job.id, "nack", delay)
                continue
            if sink is not None and output is None:
                sink.close()  # output still held elsewhere (a job's own writer, early bytes): stored before the status
            ends.append((job, status, extra, sink, output))
        if not ends:
            return
        finals = [jobstate.Finish(job.id, me, job.attempts, status, job.batch_id, extra) for job, status, extra, _, _ in ends]
        outputs = [output for *_, output in ends if output is not None]
        self.db_retry(lambda: flush_many(outputs, also=functools.partial(jobstate.finish_many, finals, in_transaction=True)))
        for job, status, extra, sink, output in ends:
            if sink is not None and output is not None:
                sink.close()  # stores nothing more after the write above (unless the worker gave it up at shutdown)
            self.stats[status.value] = self.stats.get(status.value, 0) + 1
            log.debug("job %s: %s %s", job.id, status.value, extra["error"])
        self.held.ack_many([job.id for job, *_ in ends])
        for batch_id in dict.fromkeys(job.batch_id for job, *_ in ends if job.batch_id):
            self.batch_step(batch_id)

    def batch_step(self, batch_id: str | None) -> None:
        """A job of a batch ended: release its next held jobs (or stop it past its threshold) and queue them.

        Best effort: the reconciler steps every running batch too, so a crash or an outage here delays
        the rollout, never loses it.
        """
        if not batch_id:
            return
        try:
            step = jobstate.batch_step(batch_id)
            messages = jobmessage.released_messages(
                step.released, ttr=self.settings.queue.worker_timeout, default_queue=self.settings.queue.name
            )
            if messages:
                self.queue.put_many([m.put_item() for m in messages])
            for job_id in step.stopped:
                self.queue.cancel(job_id)
        except Exception as exc:  # noqa: BLE001 - the reconciler repeats the step
            log.warning("batch %s: cannot step its rollout now (%s); the reconciler will", batch_id, exc)


def outcome_of(result: ExecResult, reason: str = "") -> tuple[JobStatus, str]:
    """The job status and error text for an attempt's result."""
    kind = result.error_kind
    if kind == ErrorKind.CANCELED.value:
        if reason == "lost":
            return JobStatus.FAILED, "lease lost: the worker could not reach the queue in time"
        return JobStatus.CANCELED, "canceled"
    if kind:
        return JobStatus.FAILED, result.error or kind
    if result.signal:
        return JobStatus.FAILED, f"killed by signal {result.signal}"
    if result.exit_code == 0:
        return JobStatus.COMPLETED, ""
    return JobStatus.FAILED, f"exit code {result.exit_code}"
