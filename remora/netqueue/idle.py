"""How the I/O thread waits for its next event: a short adaptive busy-poll, then epoll.

Sleeping in ``epoll_wait`` and being woken by the next request costs far
more than the request itself on a virtual machine: the idle vCPU halts, and
waking it takes an inter-processor interrupt and two VM exits (~30–40 µs of
CPU across both vCPUs, more than the ~25 µs a request costs in Python).  A
client that sends its next request right after reading a reply — a worker's
ACK+RESERVE loop, a producer putting job after job — makes the server pay
that on every round trip.

So after a busy iteration the I/O thread first polls without blocking for up
to ``window`` seconds (``queue.busy_poll``; 0 turns this off) and only then
sleeps.  It spins only while the traffic says an event is imminent:

* *armed* after a sleep that ended within ``DENSE * window`` (a dense
  stream), and kept armed while spins find events;
* never while replies wait for an fsync (``fsync = always``): the next
  event is then the commit thread's, hundreds of microseconds away; nor
  right after the I/O thread synced the log itself: those requests cost a
  disk sync anyway, and spinning for the next one only adds CPU;
* a spin that finds nothing backs off: the next 1, 2, 4 … ``MAX_BACKOFF``
  waits sleep at once (a spin that finds an event halves the back-off), so
  traffic caught less than half the time settles near one window wasted
  per ``MAX_BACKOFF`` requests, and an idle server never spins;
* a spin that finds its event only late (after ``LATE * window``) backs off
  the same way: the client took long to come back — on a busy machine it
  waits for a CPU, partly the spinner's — and the spin cost more CPU than the
  sleep and wake-up it saved (measured: with the machine's two vCPUs
  oversubscribed, sequential PUTs ran at 14.6k/s spinning against 22.9k/s
  not spinning, the server using 25 against 18.5 µs of CPU per PUT).

Per request, a caught spin costs less CPU than the sleep/wake cycle it
replaces (measured: ``scripts/bench_queue.py`` reports server CPU per
request); the trade is one vCPU kept busy while a client streams requests
back to back.  ``remora up`` turns it off: there the queue shares its
process, and the GIL, with the workers and the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

DENSE = 5  # a sleep shorter than DENSE * window marks a stream worth spinning for
MAX_BACKOFF = 64  # most waits skipped (sleeping at once) after a spin found nothing
LATE = 0.5  # a spin that found its event only after this share of the window counts against spinning


class AdaptivePoll:
    """``wait(timeout)`` returns what ``poll(timeout)`` would, spinning first when worthwhile."""

    __slots__ = ("armed", "backoff", "clock", "hits", "late", "misses", "poll", "skip", "window")

    def __init__(self, poll: Callable[[float], list[Any]], window: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.poll = poll
        self.window = max(0.0, window)
        self.clock = clock
        self.armed = False  # spin at the next wait
        self.skip = 0  # waits left to sleep at once (back-off after a fruitless spin)
        self.backoff = 1
        self.hits = 0  # spins that found an event
        self.misses = 0  # spins that ran out of window
        self.late = 0  # of ``hits``: found their event only after LATE * window (backed off like misses)

    def wait(self, timeout: float, spin: bool = True) -> list[Any]:
        """``spin=False``: the event expected next is not a client's (e.g. an fsync's end), so sleep at once."""
        window = self.window
        if not window or timeout <= 0 or not spin:
            return self.poll(timeout)
        poll, clock = self.poll, self.clock
        if self.armed:
            if self.skip:
                self.skip -= 1
            else:
                started = clock()
                deadline = started + min(window, timeout)
                while True:
                    events = poll(0)
                    if events:
                        self.hits += 1
                        if clock() - started > LATE * window:  # caught, but the spin cost more than a sleep
                            self.late += 1
                            self.skip = self.backoff
                            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
                        else:
                            self.backoff = max(1, self.backoff // 2)
                        return events
                    if clock() >= deadline:
                        break
                self.misses += 1
                self.skip = self.backoff
                self.backoff = min(self.backoff * 2, MAX_BACKOFF)
                timeout = max(0.0, timeout - (clock() - started))
        started = clock()
        events = poll(timeout)
        self.armed = bool(events) and clock() - started < DENSE * window
        return events

    def info(self) -> dict[str, Any]:
        return {"window_us": round(self.window * 1e6), "spin_hits": self.hits, "spin_misses": self.misses, "spin_late": self.late}
