"""Group commit: concurrent submissions share one transaction and one queue PUT_BATCH.

Under load every request thread would otherwise take SQLite's write lock in
turn (waiting in its busy handler), commit alone and make its own queue
round trip.  Here a request hands its rows to a ``GroupCommit``; whoever
finds no write in progress becomes the leader, writes everything pending in
one transaction, puts all of it on the queue in one batch, and hands the
lead to a request that arrived meanwhile.  With one client it is exactly the
old path (a batch of one); it never waits for company.

Outcomes stay per request: a batch whose transaction fails on one bad row
(a server deleted meanwhile) is written again request by request, so only
that request fails; ``QueueFull`` fails every request of the batch (the
queue answers all or nothing per frame) and each removes its own rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Record = Callable[[list[dict[str, Any]]], None]  # writes rows in one transaction (raises DatabaseError)
Put = Callable[[list[Any]], object]  # queues (job, server) pairs (raises QueueFull)


@dataclass
class _Entry:
    rows: list[dict[str, Any]]
    pairs: list[Any]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    recorded: bool = False
    error: BaseException | None = None
    put_error: BaseException | None = None


class GroupCommit:
    """Coalesces concurrent ``submit`` calls (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Entry] = []
        self._busy = False
        self.batches = 0  # statistics (tests, benchmarks)
        self.entries = 0

    def submit(self, rows: list[dict[str, Any]], pairs: list[Any], record: Record, put: Put) -> None:
        """Record ``rows`` and queue ``pairs``; raises what ``record`` or ``put`` raised for this request.

        A DatabaseError from ``record`` means nothing of this request was
        written; an error from ``put`` (QueueFull) comes after its rows
        were written (the caller removes them).
        """
        entry = _Entry(rows, pairs)
        with self._lock:
            self._pending.append(entry)
            entry.lead = not self._busy
            self._busy = True
        if not entry.lead:
            entry.done.wait()
        if entry.lead:
            self._lead(record, put)
        if entry.error is not None:
            raise entry.error
        if entry.put_error is not None:
            raise entry.put_error

    def _lead(self, record: Record, put: Put) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            self._write(batch, record)
            self._put(batch, put)
        finally:
            with self._lock:
                self.batches += 1
                self.entries += len(batch)
                if self._pending:  # arrived meanwhile: the first of them leads the next batch
                    self._pending[0].lead = True
                    self._pending[0].done.set()
                else:
                    self._busy = False
            for entry in batch:
                entry.lead = False
                entry.done.set()

    @staticmethod
    def _write(batch: list[_Entry], record: Record) -> None:
        try:
            record([row for entry in batch for row in entry.rows])
            for entry in batch:
                entry.recorded = True
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the requests below
            if len(batch) == 1:
                batch[0].error = exc
                return
        for entry in batch:  # one bad request must not fail the others
            try:
                record(entry.rows)
                entry.recorded = True
            except BaseException as exc:  # noqa: BLE001
                entry.error = exc

    @staticmethod
    def _put(batch: list[_Entry], put: Put) -> None:
        recorded = [entry for entry in batch if entry.recorded]
        if not recorded:
            return
        try:
            put([pair for entry in recorded for pair in entry.pairs])
        except BaseException as exc:  # noqa: BLE001
            for entry in recorded:
                entry.put_error = exc
