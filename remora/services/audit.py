"""The audit log: who did what to which target, and when."""

from __future__ import annotations

import logging
import threading
from typing import Any

from remora import models
from remora.models import AuditEvent

log = logging.getLogger(__name__)


class _Writer:
    """Buffers audit events and writes them in batches (one transaction per batch) from a daemon thread.

    ``flush()`` writes what is pending at once (the audit query and shutdown call it).
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            if len(self._pending) >= 200:
                self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("audit writer failed; will retry")
            finally:
                models.release_connection()

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                with models.write_transaction():
                    models.insert_rows(AuditEvent, rows)
            except models.DatabaseError as exc:
                log.error("cannot write %d audit event(s) yet: %s", len(rows), exc)
                with self._lock:
                    self._pending = rows + self._pending
                    if len(self._pending) > 100_000:  # the database is gone for long: keep memory bounded
                        dropped = len(self._pending) - 100_000
                        del self._pending[:dropped]
                        log.error("dropped %d audit event(s)", dropped)


_WRITER = _Writer()


def record(
    actor: str, action: str, target_type: str = "", target_id: str = "", details: dict[str, Any] | None = None, request_id: str = ""
) -> None:
    """Append an audit event (written within ~0.2 s, in batches; never fails the caller)."""
    _WRITER.add(
        {
            "at": models.utcnow(),
            "actor": actor[:128],
            "action": action[:64],
            "target_type": target_type[:32],
            "target_id": str(target_id)[:255],
            "details": details or {},
            "request_id": request_id[:64],
        }
    )


def flush() -> None:
    """Write pending audit events now."""
    _WRITER.flush()


def page(page: int, limit: int, actor: str | None = None, action: str | None = None) -> tuple[list[dict[str, Any]], int]:
    flush()
    query = AuditEvent.select()
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    total = query.count()
    rows = query.order_by(AuditEvent.id.desc()).limit(limit).offset((page - 1) * limit)
    return [
        {
            "id": row.id,
            "at": models.to_rfc3339(row.at),
            "actor": row.actor,
            "action": row.action,
            "target_type": row.target_type,
            "target_id": row.target_id,
            "details": row.details or {},
            "request_id": row.request_id,
        }
        for row in rows
    ], total
