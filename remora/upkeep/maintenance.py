"""The API's maintenance loop: compress finished jobs' output, prune old jobs (``api.retention``).

Every ``interval`` seconds the holder of the ``maintenance`` database lock (one API
instance at a time, like the reconciler) compresses the output of jobs that
finished at least ``compress_min_age`` seconds ago (zlib, transparently to
readers: see remora.upkeep.retention) when ``output.compress`` is on, and every
``prune_every`` seconds deletes finished jobs older than ``api.retention``
when it is > 0, and change-feed rows older than ``api.events_retention``.  A failing pass is logged and retried on the next tick.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from remora.config import Settings
from remora.services import events
from remora.upkeep import retention
from remora.upkeep.periodic import PeriodicTask

log = logging.getLogger(__name__)

LOCK_NAME = "maintenance"


class Maintenance(PeriodicTask):
    """A background thread (remora.upkeep.periodic); ``run_once()`` does one pass (tests call it directly)."""

    name = LOCK_NAME
    counts = ("compressed", "pruned")
    join_timeout = 30.0

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float = 5.0,
        compress_min_age: float = 5.0,
        prune_every: float = 60.0,
        holder: str | None = None,
    ) -> None:
        super().__init__(interval=interval, min_ttl=10.0, holder=holder)
        self.settings = settings
        self.compress_min_age = compress_min_age
        self.prune_every = prune_every
        self._compress_mark: dt.datetime | None = None
        self._last_prune = 0.0
        self._last_events_prune = 0.0
        self.compressed = 0
        self.pruned = 0

    def run_pass(self) -> dict[str, int]:
        """Compress and prune once (the lock is held); counts of what was done."""
        done = dict.fromkeys(self.counts, 0)
        if self.settings.output.compress:
            done["compressed"] = self._compress()
        retain = self.settings.api.retention
        if retain > 0 and time.monotonic() - self._last_prune >= self.prune_every:
            self._last_prune = time.monotonic()
            done["pruned"] = retention.prune_jobs(retain)
            if done["pruned"]:
                log.info("maintenance: pruned %d job(s) finished more than %.0fs ago (api.retention)", done["pruned"], retain)
        if time.monotonic() - self._last_events_prune >= self.prune_every:
            self._last_events_prune = time.monotonic()
            events.prune(self.settings.api.events_retention)
        self.compressed += done["compressed"]
        self.pruned += done["pruned"]
        return done

    def _compress(self) -> int:
        """Work through jobs finished since the last mark, a few pages per pass."""
        total = 0
        for _ in range(5):
            count, self._compress_mark, more = retention.compress_since(self._compress_mark, min_age=self.compress_min_age)
            total += count
            if not more or self.stopping:
                break
        return total


__all__ = ["Maintenance"]
