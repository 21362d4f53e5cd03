"""The SQLite connections of one process share one memory budget (``SQLITE_HEAP_LIMIT``).

Every thread that touches the database has a connection of its own, and each connection's page
cache fills as it reads.  Without a budget for them all, a long-running ``remora up`` grew with its
database by up to one full cache per thread.
"""

from __future__ import annotations

import ctypes
import sqlite3
import threading

import pytest

from remora.models import db as dbmod

MiB = 1024 * 1024
THREADS = 6
ROWS = 40_000  # about 22 MB of table: more than one connection's cache, far more than the budget below


def memory_used() -> int:
    """SQLite's own count of the memory it holds in this process (every connection)."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        pytest.skip("this Python's sqlite3 is not the shared libsqlite3.so.0: SQLite's memory use cannot be read")
    lib.sqlite3_libversion_number.restype = ctypes.c_int
    major, minor, patch = sqlite3.sqlite_version_info
    if lib.sqlite3_libversion_number() != major * 1_000_000 + minor * 1000 + patch:
        pytest.skip("this Python's sqlite3 is built in, not the shared libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


def test_connections_on_many_threads_stay_within_the_process_budget(tmp_path, monkeypatch):
    budget = 8 * MiB
    monkeypatch.setattr(dbmod, "SQLITE_HEAP_LIMIT", budget)
    database = dbmod.make_database(str(tmp_path / "remora.db"))
    with database.atomic():
        database.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        database.connection().executemany("INSERT INTO t (body) VALUES (?)", (("x" * 500,) for _ in range(ROWS)))
    database.close()
    before = memory_used()

    scanned = threading.Barrier(THREADS + 1)
    done = threading.Event()
    totals: list[int] = []

    def reader() -> None:
        try:
            for _ in range(2):  # the second scan finds what the first one cached
                totals.append(database.execute_sql("SELECT sum(length(body)) FROM t").fetchone()[0])
            scanned.wait(30)
            done.wait(30)  # keeps this thread's connection (and its cache) open while memory is measured
        finally:
            database.close()

    threads = [threading.Thread(target=reader) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        scanned.wait(60)
        held = memory_used() - before
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
        with sqlite3.connect(":memory:") as conn:  # the process-wide limit back to what the models use
            conn.execute(f"PRAGMA soft_heap_limit={dbmod.SQLITE_HEAP_LIMIT}")

    assert totals == [ROWS * 500] * (THREADS * 2)
    # Each cache alone could take 16 MB (THREADS x 16 MB in all); together they stay near the budget.
    assert held < budget + 4 * MiB, f"{THREADS} connections hold {held / MiB:.1f} MiB (budget {budget / MiB:.0f} MiB)"
