"""The audit log: who did what to which target, and when."""

from __future__ import annotations

import logging
from typing import Any

from remora import models
from remora.models import AuditEvent

log = logging.getLogger(__name__)


def record(
    actor: str, action: str, target_type: str = "", target_id: str = "", details: dict[str, Any] | None = None, request_id: str = ""
) -> None:
    """Append an audit event (best effort: a failed write is logged, never fails the caller)."""
    try:
        AuditEvent.create(
            actor=actor[:128],
            action=action[:64],
            target_type=target_type[:32],
            target_id=str(target_id)[:255],
            details=details or {},
            request_id=request_id[:64],
        )
    except models.DatabaseError as exc:
        log.error("cannot write audit event %s by %s on %s %s: %s", action, actor, target_type, target_id, exc)


def page(page: int, limit: int, actor: str | None = None, action: str | None = None) -> tuple[list[dict[str, Any]], int]:
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
