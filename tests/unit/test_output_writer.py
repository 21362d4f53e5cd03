"""The worker's output writer holds a bounded number of BYTES, whatever the number of reads waiting."""

from __future__ import annotations

import threading
import time

from remora.executor.loop import EventLoop
from remora.worker.sink import OutputWriter
from tests.support.waits import wait_for

MIB = 1024 * 1024


def test_a_producer_waits_once_max_bytes_of_output_are_queued():
    gate = threading.Event()
    writer = OutputWriter("test-output-writer")
    writer.put(gate.wait, 10.0)  # the database is slow: nothing queued behind this is stored yet
    stored: list[int] = []
    queued = 0

    def producer() -> None:
        nonlocal queued
        for n in range(32):  # 32 reads of 1 MiB: 32 MiB printed
            writer.put(stored.append, n, size=MIB)
            queued += 1

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    wait_for(lambda: queued >= 7, 5, what="the first reads queued")
    thread.join(0.3)
    assert thread.is_alive(), "the producer never waited"
    assert queued <= OutputWriter.MAX_BYTES // MIB and writer.waiting_bytes <= OutputWriter.MAX_BYTES
    gate.set()
    thread.join(10)
    writer.close(5)
    assert stored == list(range(32))  # nothing lost, in order


def test_an_item_larger_than_the_bound_still_goes_through():
    writer = OutputWriter("test-output-writer")
    done = threading.Event()
    writer.put(lambda data: None, b"", size=4 * OutputWriter.MAX_BYTES)
    writer.put(done.set)
    assert done.wait(5)
    writer.close(5)


def test_what_one_pass_of_the_event_loop_hands_in_wakes_the_writer_once():
    """A fan-out's jobs print together: one wake-up of the writer per pass of the loop, not one per read."""
    loop = EventLoop(name="test-loop")
    loop.start()
    writer = OutputWriter("test-output-writer", loop)
    stored: list[int] = []

    def one_pass() -> None:
        for i in range(20):
            writer.put(stored.append, i, size=100)
            time.sleep(0.001)  # between reads the loop's thread lets others run (libssh2 calls, select)

    try:
        for n in range(1, 3):
            wait_for(lambda: writer.idle, 5, what="the writer waiting for work")
            loop.call_soon(one_pass)
            wait_for(lambda n=n: len(stored) == 20 * n, 5, what="every read stored")
            assert writer.wakeups == n
        assert stored == [*range(20), *range(20)]
    finally:
        writer.close(5)
        loop.stop()
