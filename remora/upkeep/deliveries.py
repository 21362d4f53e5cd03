"""The webhook delivery loop of the API process: outbox rows out to their receivers, at least once, in order per subject.

Every ``webhooks.interval`` the loop takes its database lock (among several API
processes one sends) and starts a lane for each webhook that has a due
delivery and no lane yet, up to ``webhooks.senders`` lanes at once, each in a
thread of a small pool.  A lane claims its webhook's deliveries one at a time
(``models.outbox.claim_next``: the oldest due one whose subject has no earlier
pending delivery), sends it outside any transaction (``notify.send_delivery``,
bounded by ``webhooks.timeout``) and records the attempt: ``delivered`` on a
2xx, else pending again after an exponential backoff with jitter, or
``failed`` once ``webhooks.retry_for`` has passed since the event.  A lane
ends when its webhook has nothing due.

So a slow or dead receiver holds only its own lane; jobs never wait for a
receiver (their transaction only inserted rows).  A claim is a lease
(``locked_until``): the deliveries of a process killed while sending are
taken again once it expires, which makes delivery at-least-once.

Once a minute the loop also deletes finished deliveries older than
``webhooks.retention``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from remora import models, notify
from remora.config import Settings
from remora.crypto import SecretBox
from remora.models import outbox
from remora.upkeep.periodic import PeriodicTask

log = logging.getLogger(__name__)

PRUNE_EVERY = 60.0  # seconds between two prunes of the delivery log


class Deliveries(PeriodicTask):
    name = "webhook-deliveries"
    counts = ("lanes_started", "pruned")

    def __init__(self, settings: Settings, secrets: SecretBox, *, interval: float | None = None, holder: str | None = None) -> None:
        hooks = settings.webhooks
        super().__init__(interval=interval if interval is not None else hooks.interval, min_ttl=10.0, holder=holder)
        self.settings = settings
        self.secrets = secrets
        self.lanes = max(1, hooks.senders)
        self.lease = 2 * hooks.timeout + 30.0  # a claim outlives any attempt of a live sender
        self._pool = ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="webhook-lane")
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._last_prune = 0.0
        self.sent = 0

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_pass(self) -> dict[str, int]:
        started = 0
        for webhook_id in outbox.due_webhooks():
            with self._busy_lock:
                if webhook_id in self._busy or len(self._busy) >= self.lanes:
                    continue
                self._busy.add(webhook_id)
            try:
                self._pool.submit(self._lane, webhook_id)
            except RuntimeError:  # the pool shut down: stopping
                with self._busy_lock:
                    self._busy.discard(webhook_id)
                break
            started += 1
        pruned = 0
        if time.monotonic() - self._last_prune >= PRUNE_EVERY:
            self._last_prune = time.monotonic()
            cutoff = models.utcnow() - dt.timedelta(seconds=self.settings.webhooks.retention)
            pruned = outbox.prune(cutoff)
        return {"lanes_started": started, "pruned": pruned}

    def _lane(self, webhook_id: str) -> None:
        try:
            while not self.stopping:
                delivery = outbox.claim_next(webhook_id, self.holder, self.lease)
                if delivery is None:
                    return
                self.send(delivery)
        except Exception:
            log.exception("webhook lane %s failed; it starts again on the next pass", webhook_id)
        finally:
            with self._busy_lock:
                self._busy.discard(webhook_id)
            models.release_connection()

    def send(self, delivery: models.Delivery) -> None:
        """One attempt of a claimed delivery, recorded."""
        webhook = delivery.webhook
        try:
            result = notify.send_delivery(delivery, webhook, self.settings, self.secrets)
        except Exception as exc:  # a bug in rendering must not stop the lane: record it as the attempt's error
            log.exception("delivery %s to webhook %s failed unexpectedly", delivery.uid, webhook.name)
            result = notify.Result(False, None, f"internal error: {type(exc).__name__}")
        retry = None if result.ok else notify.retry_at(delivery.attempts + 1, delivery.created_at, self.settings)
        outbox.record_attempt(delivery.seq, self.holder, ok=result.ok, status_code=result.status_code, error=result.error, retry_at=retry)
        self.sent += 1
        if result.ok:
            log.debug("delivered %s (%s) to webhook %s", delivery.uid, delivery.event, webhook.name)
        elif retry is None:
            log.warning("gave up delivery %s (%s) to webhook %s: %s", delivery.uid, delivery.event, webhook.name, result.error)
        else:
            log.info("delivery %s to webhook %s failed (%s); next attempt at %s", delivery.uid, webhook.name, result.error, retry)


__all__ = ["Deliveries"]
