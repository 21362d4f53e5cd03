"""Notifications: what a delivery's message says (``render``) and how it is sent (``transport``).

The outbox rows live in ``remora.models.outbox``; the API's delivery loop
(``remora.upkeep.deliveries``) and the webhook use-cases
(``remora.services.webhooks``) send them with ``send_delivery`` below.
"""

from __future__ import annotations

from remora.notify.transport import Result, retry_at, send_delivery

__all__ = ["Result", "retry_at", "send_delivery"]
