"""``BurstThreads``: threads made for a burst of blocking calls, gone a little after it is over.

A worker's job starts block: a channel open on a pooled SSH connection, and
before the first job on a server, the connection itself (a TCP connect,
sshd's fork, the key exchange, the authentication: mostly waiting for the
other side).  They come in bursts (a fan-out's RESERVE hands out hundreds at
once) and overlap on up to ``limit`` threads, made on demand.  A thread
with nothing to do waits ``linger`` seconds for the next call (a steady
stream of jobs reuses it) and then ends: a worker running 1,000 jobs on 100
warm connections holds paramiko's thread per connection and no idle starter.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

LINGER = 2.0  # seconds an idle thread waits for another call before it ends


class BurstThreads:
    """Run submitted calls on up to ``limit`` threads, started on demand; an idle one ends after ``linger`` seconds."""

    def __init__(self, limit: int, name: str, *, linger: float = LINGER) -> None:
        self.limit = max(1, limit)
        self.name = name
        self.linger = linger
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._running = 0  # threads alive
        self._idle = 0  # of them: waiting for a call
        self._made = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; RuntimeError after ``shutdown`` (as ``ThreadPoolExecutor.submit``)."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: shut down")
            self._calls.append((fn, args))
            if self._idle > len(self._calls) - 1:  # an idle thread is there for it
                self._cond.notify()
                return
            if self._running >= self.limit:
                return
            self._running += 1
            self._made += 1
            name = f"{self.name}-{self._made}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    @property
    def running(self) -> int:
        """Threads alive now."""
        return self._running

    def _work(self) -> None:
        cond, calls = self._cond, self._calls
        while True:
            with cond:
                if not calls and not self._closed:
                    self._idle += 1
                    try:
                        cond.wait_for(lambda: calls or self._closed, self.linger)
                    finally:
                        self._idle -= 1
                if not calls:
                    self._running -= 1
                    return
                fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("%s: unexpected error", self.name)

    def shutdown(self) -> None:
        """Take no more calls; the queued ones still run (a worker's starts hand their jobs back), idle threads end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


__all__ = ["BurstThreads"]
