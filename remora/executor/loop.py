"""The event loop that runs jobs without a thread each: one ``selectors`` selector, a heap of timers.

A running job is a set of file descriptors (a paramiko channel's ``fileno()``,
a local job's pipes and pidfd) and a few deadlines (its timeout, the KILL after
TERM, the drain after its exit), so a worker runs hundreds of jobs on one
thread: ``EventLoop`` reads what arrives, calls the job's handler, and fires
timers in deadline order.  What blocks (an SSH handshake, a kill over SSH,
feeding a script on stdin) goes to the loop's small thread pool
(``blocking``), whose callers post their outcome back with ``call_soon``.

Only ``call_soon``, ``blocking`` and ``stop`` may be called from other threads;
everything else (``add_reader``, ``call_at``, ``every``) runs on the loop thread,
usually from a handler.  A handler that raises is logged and its job is left
to its own timers; the loop itself never dies of it.

``run_until`` drives a private loop on the calling thread (``Executor.run``:
one job, synchronously, through the same code).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[], Any]
_serials = itertools.count(1)


class Timer:
    """A scheduled call; ``cancel()`` keeps it from running (it stays in the heap until its time)."""

    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callback) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """One selector, a timer heap and a queue of calls from other threads; see the module docstring."""

    def __init__(self, *, name: str = "remora-loop", threads: int = 8) -> None:
        self.name = name
        self.threads = max(1, threads)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callback] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.serial = next(_serials)  # tells loops apart for what is kept per loop (libssh2 sessions)
        self._at_close: list[Callback] = []
        self._after_pass: list[Callback] = []
        self._holding: set[int] = set()  # threads whose calls wake the loop once, when they are done

    # -- from any thread ------------------------------------------------------------

    def call_soon(self, fn: Callback) -> None:
        """Run ``fn`` on the loop thread, soon (thread-safe)."""
        self._calls.append(fn)
        ident = threading.get_ident()
        if ident != self._loop_ident and ident not in self._holding:
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the loop has wake-ups pending already

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Calls this thread makes meanwhile wake the loop once, at the end (a burst of starts: one pass for all)."""
        ident = threading.get_ident()
        self._holding.add(ident)
        try:
            yield
        finally:
            self._holding.discard(ident)
            self._wake()

    def blocking(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop's thread pool: for what blocks (connects, kills over SSH, stdin)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=f"{self.name}-pool")
            pool = self._pool
        pool.submit(_logged, fn, *args)

    def start(self) -> None:
        """Run the loop on its own thread (until ``stop``)."""
        self._thread = threading.Thread(target=self._run_forever, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self.call_soon(lambda: None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=False)
        if self._thread is None or not self._thread.is_alive():
            self.close()

    def running(self) -> bool:
        """Whether a thread drives this loop now."""
        return self._loop_ident is not None and not self._stop

    def running_here(self) -> bool:
        return threading.get_ident() == self._loop_ident

    def at_close(self, fn: Callback) -> None:
        """Call ``fn`` when the loop is closed (what belongs to it: its libssh2 sessions)."""
        self._at_close.append(fn)

    def close(self) -> None:
        hooks, self._at_close = self._at_close, []
        for fn in hooks:
            _logged(fn)
        try:
            self._sel.close()
        finally:
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_r = self._wake_w = -1

    # -- on the loop thread --------------------------------------------------------------

    def add_reader(self, fd: int, fn: Callback) -> None:
        self._sel.register(fd, selectors.EVENT_READ, fn)

    def remove_reader(self, fd: int) -> None:
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def after_pass(self, fn: Callback) -> None:
        """Call ``fn`` once this pass over the ready channels and timers is over (on the loop thread).

        What a pass hands to other threads goes in one hand-over: one wake-up of the thread
        that stores output for a hundred jobs that printed at once, not a hundred.
        """
        self._after_pass.append(fn)

    def call_at(self, when: float, fn: Callback) -> Timer:
        timer = Timer(when, fn)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, fn: Callback) -> Timer:
        return self.call_at(time.monotonic() + delay, fn)

    def run_until(self, done: Callable[[], bool]) -> None:
        """Drive the loop on this thread until ``done()`` (a private loop: ``Executor.run``)."""
        self._loop_ident = threading.get_ident()
        while not done() and not self._stop:
            self._once()

    def _run_forever(self) -> None:
        self._loop_ident = threading.get_ident()
        while not self._stop:
            try:
                self._once()
            except Exception:  # pragma: no cover - a bug in the loop itself: keep the other jobs running
                log.exception("event loop %s: unexpected error", self.name)
                time.sleep(0.01)

    def _once(self) -> None:
        timeout = None
        if self._calls:
            timeout = 0.0
        elif self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        for key, _ in self._sel.select(timeout if timeout is None else min(timeout, 3600.0)):
            fn = key.data
            if fn is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            _logged(fn)
        while self._calls:
            _logged(self._calls.popleft())
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                _logged(timer.fn)
        while self._after_pass:
            hooks, self._after_pass = self._after_pass, []
            for hook in hooks:
                _logged(hook)


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("event loop: a handler failed")
