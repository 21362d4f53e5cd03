"""The worker's event loop: readers, timers in deadline order, calls from other threads, a private loop."""

from __future__ import annotations

import os
import threading
import time

from remora.executor.loop import EventLoop
from tests.support.waits import wait_for


def test_timers_fire_in_deadline_order_and_a_cancelled_one_never():
    loop = EventLoop(name="t")
    fired: list[str] = []
    now = time.monotonic()
    loop.call_at(now + 0.06, lambda: fired.append("late"))
    loop.call_at(now + 0.02, lambda: fired.append("early"))
    loop.call_at(now + 0.04, lambda: fired.append("never")).cancel()
    loop.run_until(lambda: len(fired) == 2)
    loop.stop()
    assert fired == ["early", "late"]


def test_readers_and_calls_from_other_threads_wake_a_running_loop():
    loop = EventLoop(name="t")
    loop.start()
    r, w = os.pipe()
    got: list[bytes] = []
    called = threading.Event()

    def readable() -> None:
        data = os.read(r, 100)
        got.append(data)
        if not data:
            loop.remove_reader(r)

    loop.call_soon(lambda: loop.add_reader(r, readable))
    loop.call_soon(called.set)
    assert called.wait(2)
    os.write(w, b"hello")
    wait_for(lambda: got == [b"hello"], 2, what="the loop to read")
    os.close(w)
    wait_for(lambda: got == [b"hello", b""], 2, what="EOF")
    done = threading.Event()
    loop.blocking(done.set)  # the pool for what blocks
    assert done.wait(2)
    loop.stop()
    os.close(r)


def test_a_failing_handler_is_logged_and_the_loop_goes_on(caplog):
    loop = EventLoop(name="t")
    fired: list[int] = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_later(0.01, lambda: fired.append(1))
    loop.run_until(lambda: bool(fired))
    loop.stop()
    assert "a handler failed" in caplog.text


def test_calls_from_many_threads_at_once_are_never_left_waiting():
    """Every call_soon wakes a loop that sleeps without a timer (no wake-up lost when several arrive together)."""
    loop = EventLoop(name="t")
    loop.start()
    count = [0]
    per_thread, threads = 3000, 4

    def bump() -> None:
        count[0] += 1

    def caller() -> None:
        for n in range(per_thread):
            loop.call_soon(bump)
            if n % 50 == 0:
                time.sleep(0.0005)  # let the loop go back to sleep in between

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    try:
        wait_for(lambda: count[0] == per_thread * threads, 5, what="every call to run")
    finally:
        loop.stop()


def test_after_pass_hooks_run_once_after_everything_ready_in_that_pass():
    loop = EventLoop(name="t")
    order: list[str] = []

    def first() -> None:
        order.append("call 1")
        loop.after_pass(lambda: order.append("hook"))

    loop.call_soon(first)
    loop.call_soon(lambda: order.append("call 2"))
    loop.call_at(time.monotonic() - 1, lambda: order.append("due timer"))
    loop.run_until(lambda: "hook" in order)
    loop.call_soon(lambda: order.append("next pass"))
    loop.run_until(lambda: "next pass" in order)
    loop.stop()
    assert order == ["call 1", "call 2", "due timer", "hook", "next pass"]


def test_calls_made_while_holding_wake_the_loop_once_and_all_run():
    loop = EventLoop(name="t")
    loop.start()
    wakes = 0
    wake = loop._wake

    def counting() -> None:
        nonlocal wakes
        wakes += 1
        wake()

    loop._wake = counting  # type: ignore[method-assign]
    ran: list[int] = []
    try:
        with loop.holding():
            for i in range(50):
                loop.call_soon(lambda i=i: ran.append(i))
        wait_for(lambda: len(ran) == 50, 5, what="every held call run")
        assert ran == list(range(50)) and wakes == 1
        loop.call_soon(lambda: ran.append(50))  # not holding: a call wakes the loop itself
        wait_for(lambda: len(ran) == 51, 5, what="a call after holding")
        assert wakes == 2
    finally:
        loop.stop()
