"""GroupCommit: concurrent submissions share writes, and outcomes stay per request."""

from __future__ import annotations

import threading
import time

import pytest

from remora.services.group_commit import GroupCommit


class Store:
    """Records rows like a database would: a transaction fails as a whole on a bad row."""

    def __init__(self, delay: float = 0.0) -> None:
        self.rows: list[int] = []
        self.transactions = 0
        self.puts: list[list[int]] = []
        self.delay = delay

    def record(self, rows):
        time.sleep(self.delay)
        if any(r < 0 for r in rows):
            raise ValueError("bad row")
        self.transactions += 1
        self.rows.extend(rows)

    def put(self, pairs):
        self.puts.append(list(pairs))


def run_concurrently(group, store, requests, put=None):
    results: dict[int, object] = {}
    start = threading.Barrier(len(requests))

    def one(i, rows):
        start.wait()
        try:
            group.submit(rows, rows, store.record, put or store.put)
            results[i] = "ok"
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, rows)) for i, rows in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_a_lone_submission_is_one_batch():
    group, store = GroupCommit(), Store()
    group.submit([1, 2], [1, 2], store.record, store.put)
    assert store.rows == [1, 2] and store.puts == [[1, 2]] and group.batches == 1


def test_concurrent_submissions_share_transactions_and_queue_batches():
    group, store = GroupCommit(), Store(delay=0.02)
    results = run_concurrently(group, store, [[i] for i in range(16)])
    assert all(r == "ok" for r in results.values()) and len(results) == 16
    assert sorted(store.rows) == list(range(16))
    assert group.entries == 16 and group.batches < 16 and store.transactions == group.batches
    assert sorted(x for batch in store.puts for x in batch) == list(range(16))


def test_a_bad_request_fails_alone():
    group, store = GroupCommit(), Store(delay=0.02)
    results = run_concurrently(group, store, [[1], [-1], [2], [3], [4], [5]])
    assert isinstance(results[1], ValueError)
    assert [r for i, r in results.items() if i != 1] == ["ok"] * 5
    assert sorted(store.rows) == [1, 2, 3, 4, 5]
    assert -1 not in [x for batch in store.puts for x in batch]


def test_a_queue_error_reaches_every_recorded_request():
    group, store = GroupCommit(), Store(delay=0.02)

    def full(pairs):
        raise RuntimeError("queue full")

    results = run_concurrently(group, store, [[i] for i in range(6)], put=full)
    assert all(isinstance(r, RuntimeError) for r in results.values())
    assert sorted(store.rows) == list(range(6))  # recorded: the callers remove their own rows


def test_the_group_goes_on_after_errors():
    group, store = GroupCommit(), Store()
    with pytest.raises(ValueError):
        group.submit([-1], [-1], store.record, store.put)
    group.submit([7], [7], store.record, store.put)
    assert store.rows == [7]
