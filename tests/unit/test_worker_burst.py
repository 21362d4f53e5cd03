"""BurstThreads: up to ``limit`` threads for a burst of blocking calls, none left a little after it is over."""

from __future__ import annotations

import threading

import pytest

from remora.worker.burst import BurstThreads
from tests.support.waits import wait_for


def test_a_burst_runs_on_at_most_limit_threads_and_they_end_after_it():
    burst = BurstThreads(4, "t", linger=0.05)
    release = threading.Event()
    lock = threading.Lock()
    now = {"in": 0, "most": 0, "done": 0}

    def call() -> None:
        with lock:
            now["in"] += 1
            now["most"] = max(now["most"], now["in"])
        release.wait(10)
        with lock:
            now["in"] -= 1
            now["done"] += 1

    for _ in range(10):
        burst.submit(call)
    wait_for(lambda: now["in"] == 4, 5, 0.01, "four calls running")
    assert burst.running == 4 and now["most"] == 4
    release.set()
    wait_for(lambda: now["done"] == 10 and burst.running == 0, 5, 0.01, "every call, then no thread")
    assert now["most"] == 4
    assert not [t for t in threading.enumerate() if t.name.startswith("t-")]


def test_a_failing_call_is_logged_and_the_rest_still_run(caplog):
    burst = BurstThreads(1, "t", linger=0.05)
    ran = []

    def boom() -> None:
        raise ValueError("boom")

    burst.submit(boom)
    burst.submit(ran.append, 1)
    wait_for(lambda: ran == [1] and burst.running == 0, 5, 0.01, "the second call")
    assert "t: unexpected error" in caplog.text and "boom" in caplog.text


def test_after_shutdown_no_call_is_taken_but_the_queued_ones_run():
    burst = BurstThreads(1, "t", linger=30)
    gate = threading.Event()
    ran = []
    burst.submit(gate.wait, 10)
    burst.submit(ran.append, "queued")
    burst.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        burst.submit(ran.append, "late")
    gate.set()
    wait_for(lambda: burst.running == 0, 5, 0.01, "the queued call")
    assert ran == ["queued"]


def test_a_steady_stream_of_calls_reuses_a_lingering_thread():
    burst = BurstThreads(4, "s", linger=5)
    done = []
    for n in range(50):
        burst.submit(done.append, n)
        wait_for(lambda n=n: len(done) == n + 1, 5, 0.001, f"call {n}")
    assert burst.running == 1 and burst._made == 1  # one thread took them all, one after another
    burst.shutdown()  # wakes the idle thread: it ends at once, not after its linger
    wait_for(lambda: burst.running == 0, 2, 0.01, "the idle thread to end")
