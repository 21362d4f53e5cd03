"""The one skeleton of the API's background loops: a thread, an interval, a database lock, one pass at a time.

Every ``interval`` seconds the loop takes (or renews) its ``DbLock`` -- named
after the loop, so among several API instances one runs the passes -- and runs
``run_pass()``.  A failing pass is logged and the next tick tries again; the
thread's pooled database connection is returned after every pass.  ``stop()``
ends the thread and gives the lock up at once.  ``run_once()`` is one tick
without the thread (tests call it directly).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from remora import models
from remora.upkeep.dblock import DbLock

log = logging.getLogger(__name__)


class PeriodicTask:
    """Subclasses set ``name`` and ``counts`` and implement ``run_pass``; ``ready()`` may skip a tick."""

    name = "periodic"  # the lock's name and the thread's
    counts: tuple[str, ...] = ()  # the keys of the dict run_once returns
    join_timeout = 10.0

    def __init__(self, *, interval: float, min_ttl: float, holder: str | None = None) -> None:
        self.interval = interval
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.lock = DbLock(self.name, self.holder, max(3 * interval, min_ttl))
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)
        self.release()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def acquire(self) -> bool:
        """Take or renew the lock; True when this instance holds it."""
        return self.lock.acquire()

    def release(self) -> None:
        self.lock.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("%s pass failed; trying again in %.1fs", self.name, self.interval)
            finally:
                models.release_connection()

    def ready(self) -> bool:
        """False to skip this tick without taking the lock."""
        return True

    def run_once(self) -> dict[str, int]:
        """One pass when this instance holds the lock; counts of what was done (zeros without the lock)."""
        if not self.ready() or not self.acquire():
            return dict.fromkeys(self.counts, 0)
        self.passes += 1
        return self.run_pass()

    def run_pass(self) -> dict[str, int]:
        raise NotImplementedError


__all__ = ["PeriodicTask"]
