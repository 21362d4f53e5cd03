"""The I/O thread's adaptive busy-poll, driven by a scripted poll and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from remora.netqueue.idle import DENSE, MAX_BACKOFF, AdaptivePoll

WINDOW = 0.0001  # 100 µs


class Scripted:
    """A poll whose events arrive at given clock times; each poll(0) advances the clock by ``step``."""

    def __init__(self, arrivals: list[float], step: float = 0.00001) -> None:
        self.now = 0.0
        self.arrivals = sorted(arrivals)
        self.step = step
        self.calls: list[float] = []  # the timeout of every call

    def clock(self) -> float:
        return self.now

    def poll(self, timeout: float) -> list[Any]:
        self.calls.append(timeout)
        if self.arrivals and self.arrivals[0] <= self.now:
            self.arrivals.pop(0)
            return [(5, 1)]
        if timeout == 0:
            self.now += self.step
            return []
        due = self.arrivals[0] if self.arrivals else float("inf")
        if due - self.now <= timeout:
            self.now = due
            self.arrivals.pop(0)
            return [(5, 1)]
        self.now += timeout
        return []

    def blocking_calls(self) -> int:
        return sum(1 for t in self.calls if t > 0)


def test_off_passes_the_timeout_straight_through() -> None:
    s = Scripted([0.5])
    idle = AdaptivePoll(s.poll, 0.0, s.clock)
    assert idle.wait(1.0) == [(5, 1)]
    assert s.calls == [1.0]
    assert idle.info() == {"window_us": 0, "spin_hits": 0, "spin_misses": 0, "spin_late": 0}


def test_an_idle_server_never_spins() -> None:
    s = Scripted([0.2, 0.4, 0.6])  # events far apart
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    for _ in range(3):
        assert idle.wait(1.0)
    assert 0 not in s.calls  # every wait slept at once
    assert not idle.armed and idle.hits == idle.misses == 0


def test_a_dense_stream_is_caught_by_spinning() -> None:
    gap = WINDOW / 4  # the client comes back early in the window
    arrivals = [gap * (k + 1) * 1.0 for k in range(50)]
    s = Scripted(arrivals, step=gap / 10)
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    assert idle.wait(1.0)  # a short sleep arms the spin
    assert idle.armed
    sleeps = s.blocking_calls()
    for _ in range(49):
        assert idle.wait(1.0)
    assert idle.hits == 49 and idle.misses == 0
    assert s.blocking_calls() == sleeps  # no sleep after the first


def test_a_fruitless_spin_backs_off_exponentially() -> None:
    s = Scripted([])
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    idle.armed = True
    skipped_runs = []
    for _ in range(12):
        s.arrivals = [s.now + WINDOW * 2]  # always just too late for the window, but a short sleep
        before = idle.misses
        idle.wait(1.0)
        if idle.misses == before:
            skipped_runs.append(idle.misses)
    # after miss k the next 2**(k-1) waits (capped) sleep at once
    assert idle.misses >= 3
    counts = [skipped_runs.count(m) for m in range(1, idle.misses)]
    assert counts[:3] == [1, 2, 4]
    assert all(c <= MAX_BACKOFF for c in counts)


def test_a_spin_never_outlasts_the_timeout_and_the_sleep_gets_the_rest() -> None:
    s = Scripted([10.0], step=WINDOW / 4)
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    idle.armed = True
    assert idle.wait(WINDOW / 2) == []  # a timeout shorter than the window bounds the spin
    assert s.calls[:-1] == [0, 0] and s.calls[-1] == pytest.approx(0.0)
    s.calls.clear()
    idle.skip, idle.armed = 0, True
    assert idle.wait(3 * WINDOW) == []  # spins one window, then sleeps what is left
    assert s.calls[:-1] == [0] * 4
    assert s.calls[-1] == pytest.approx(2 * WINDOW)


def test_a_long_sleep_disarms() -> None:
    s = Scripted([WINDOW / 2, WINDOW / 2 + DENSE * WINDOW * 3])
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    idle.wait(1.0)
    assert idle.armed
    idle.skip = 1  # sleep at once this time
    idle.wait(1.0)
    assert not idle.armed


def test_zero_timeout_never_spins() -> None:
    s = Scripted([])
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    idle.armed = True
    assert idle.wait(0) == []
    assert s.calls == [0]
    assert idle.misses == 0


def test_traffic_caught_only_now_and_then_settles_to_rare_spins() -> None:
    # one request in four comes back within the window, the rest just after it (still a dense stream)
    s = Scripted([], step=WINDOW / 10)
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    for k in range(2000):
        s.arrivals = [s.now + (WINDOW / 2 if k % 4 == 0 else WINDOW * 2)]
        assert idle.wait(1.0)
    spins = idle.hits + idle.misses
    assert spins < 2000 / 8, (idle.hits, idle.misses)  # far from spinning on every wait
    assert idle.backoff >= MAX_BACKOFF // 4


def test_no_spin_when_told_the_next_event_is_not_a_clients() -> None:
    s = Scripted([WINDOW / 2])
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    idle.armed = True
    assert idle.wait(1.0, spin=False)
    assert s.calls == [1.0]
    assert idle.hits == idle.misses == 0


def test_a_client_that_comes_back_late_in_the_window_settles_to_rare_spins() -> None:
    # every spin would catch the request, but only after 80 µs of it: on a busy machine (the client waits
    # for a CPU, partly the spinner's) that costs more than the sleep and wake-up it saves
    s = Scripted([], step=WINDOW / 10)
    idle = AdaptivePoll(s.poll, WINDOW, s.clock)
    for _ in range(2000):
        s.arrivals = [s.now + WINDOW * 0.8]
        assert idle.wait(1.0)
    assert idle.hits + idle.misses < 2000 / 8, (idle.hits, idle.misses)
    assert idle.info()["spin_late"] == idle.hits
