"""Emitting notifications from use-cases: ``emit(event, subject)`` inside the caller's write transaction.

Job and batch final states are emitted by ``remora.jobstate`` itself (through
``remora.models.outbox``); this is the entry point for other events, e.g. a
scheduler that records a missed slot::

    with models.write_transaction():
        ...  # record the missed slot
        notify.emit("schedule.missed", {"schedule": {"name": name, "slot": at, "template": template}}, subject=f"schedule:{name}",
                    template=template)

Enabled webhooks subscribed to ``event`` whose filter matches get one pending
delivery each, committed (or rolled back) with the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from remora.models import outbox
from remora.models.outbox import EVENTS


def emit(event: str, data: dict[str, Any], *, subject: str, template: str | None = None, tags: Iterable[str] = ()) -> int:
    """Queue ``event`` with ``data`` (merged into the delivered JSON) for every matching webhook; how many deliveries.

    ``subject`` orders deliveries: those of one subject reach a webhook in the order they were emitted.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r} (known: {', '.join(EVENTS)})")
    return outbox.emit(event, subject, data, template=template, tags=tags)


__all__ = ["EVENTS", "emit"]
