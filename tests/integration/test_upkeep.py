"""The background loops' one skeleton (remora.upkeep.periodic): one lock holder, a failing pass does not end the loop."""

from __future__ import annotations

import threading

import pytest

from remora import models
from remora.upkeep.periodic import PeriodicTask
from tests.support.waits import wait_for


class Counting(PeriodicTask):
    name = "test-loop"
    counts = ("ran",)

    def __init__(self, holder: str, fail_first: int = 0, interval: float = 0.01) -> None:
        super().__init__(interval=interval, min_ttl=5.0, holder=holder)
        self.fail_first = fail_first
        self.threads: set[str] = set()

    def run_pass(self) -> dict[str, int]:
        self.threads.add(threading.current_thread().name)
        if self.passes <= self.fail_first:
            raise RuntimeError(f"pass {self.passes} fails")
        return {"ran": 1}


@pytest.fixture
def db(sqlite_url):
    models.init_db(sqlite_url)
    yield
    models.close_db()


def test_one_holder_runs_passes_and_stop_gives_the_lock_up(db):
    first, second = Counting("api-1"), Counting("api-2")
    assert first.run_once() == {"ran": 1}
    assert second.run_once() == {"ran": 0} and second.passes == 0  # the other instance holds the lock
    first.start()
    wait_for(lambda: first.passes >= 3, 5, what="three passes in the thread")
    first.stop()
    assert first.threads == {"MainThread", "test-loop"}
    assert second.run_once() == {"ran": 1}  # stop() released the lock at once, no waiting for its ttl
    second.release()


def test_a_failing_pass_is_logged_and_the_loop_goes_on(db, caplog):
    loop = Counting("api-1", fail_first=2)
    loop.start()
    try:
        wait_for(lambda: loop.passes >= 4, 5, what="passes after the failing ones")
    finally:
        loop.stop()
    failures = [r for r in caplog.records if "test-loop pass failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


def test_a_task_that_is_not_ready_does_not_take_the_lock(db):
    class Idle(Counting):
        def ready(self) -> bool:
            return False

    assert Idle("api-1").run_once() == {"ran": 0}
    assert Counting("api-2").run_once() == {"ran": 1}
