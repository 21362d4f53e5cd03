"""Backoff for the worker's dependencies (the queue, the database): one ``Outage`` per dependency.

A failing dependency is logged once when it goes down and once when it is
back, never once per retry; each failure hands out the next delay, doubling
from ``FIRST_DELAY`` up to ``MAX_BACKOFF``; a success starts over.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

FIRST_DELAY = 0.1
MAX_BACKOFF = 5.0


class Outage:
    """Logs a failing dependency once per outage and its recovery once; hands out backoff delays."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self.backoff = FIRST_DELAY
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> float:
        """Note a failure; the delay to wait before the next try."""
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
        self.backoff = FIRST_DELAY
