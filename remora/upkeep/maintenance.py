"""The API's maintenance loop: compress finished jobs' output, prune old jobs (``api.retention``).

Every ``interval`` seconds the holder of the ``maintenance`` lease (one API
instance at a time, like the reconciler) compresses the output of jobs that
finished at least ``compress_min_age`` seconds ago (zlib, transparently to
readers: see remora.upkeep.retention) when ``output.compress`` is on, and every
``prune_every`` seconds deletes finished jobs older than ``api.retention``
when it is > 0.  A failing pass is logged and retried on the next tick.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

from remora import models
from remora.config import Settings
from remora.upkeep import retention
from remora.upkeep.dblock import Lease

log = logging.getLogger(__name__)

LOCK_NAME = "maintenance"


class Maintenance:
    """A background thread; ``run_once()`` does one pass (tests call it directly)."""

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float = 5.0,
        compress_min_age: float = 5.0,
        prune_every: float = 60.0,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.interval = interval
        self.compress_min_age = compress_min_age
        self.prune_every = prune_every
        self.lease = Lease(LOCK_NAME, holder or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}", max(3 * interval, 10.0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._compress_mark: dt.datetime | None = None
        self._last_prune = 0.0
        self.compressed = 0
        self.pruned = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.lease.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("maintenance pass failed; trying again in %.1fs", self.interval)
            finally:
                database = models.get_database()
                if database is not None and models.is_postgres(database) and not database.is_closed():
                    database.close()

    def run_once(self) -> dict[str, int]:
        """Compress and prune once (when holding the lease); counts of what was done."""
        done = {"compressed": 0, "pruned": 0}
        if not self.lease.acquire():
            return done
        if self.settings.output.compress:
            done["compressed"] = self._compress()
        retain = self.settings.api.retention
        if retain > 0 and time.monotonic() - self._last_prune >= self.prune_every:
            self._last_prune = time.monotonic()
            done["pruned"] = retention.prune_jobs(retain)
            if done["pruned"]:
                log.info("maintenance: pruned %d job(s) finished more than %.0fs ago (api.retention)", done["pruned"], retain)
        self.compressed += done["compressed"]
        self.pruned += done["pruned"]
        return done

    def _compress(self) -> int:
        """Work through jobs finished since the last mark, a few pages per pass."""
        total = 0
        for _ in range(5):
            count, self._compress_mark, more = retention.compress_since(self._compress_mark, min_age=self.compress_min_age)
            total += count
            if not more or self._stop.is_set():
                break
        return total


__all__ = ["Maintenance"]
