"""The worker's servers: rows cached for SERVER_TTL, one query for a claim's rows, an executor per row read."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from remora import models
from remora.crypto import SecretBox
from remora.executor.sshpool import SSHPool
from remora.models import Server
from remora.worker import servers as servers_mod
from remora.worker.servers import WorkerServers
from tests.support.workerkit import init_db, local_server, make_settings


def reads_of_servers(fn: Any) -> int:
    database = models.get_database()
    original = database.execute_sql
    reads = 0

    def counting(sql: str, *args: Any, **kw: Any) -> Any:
        nonlocal reads
        reads += 'FROM "server"' in sql
        return original(sql, *args, **kw)

    database.execute_sql = counting
    try:
        fn()
    finally:
        database.execute_sql = original
    return reads


def make(tmp_path) -> WorkerServers:
    init_db(tmp_path)
    settings = make_settings(tmp_path)
    return WorkerServers(settings, SecretBox.from_settings(settings), SSHPool())


def test_rows_are_read_once_per_ttl_and_an_edit_is_seen_after_it(tmp_path, monkeypatch):
    cache = make(tmp_path)
    server = local_server("here")
    first = cache.row(server.id)
    assert reads_of_servers(lambda: cache.row(server.id)) == 0
    assert cache.executor(first) is cache.executor(cache.row(server.id))  # one executor per row read
    Server.update(name="renamed").where(Server.id == server.id).execute()
    assert cache.row(server.id).name == "here"  # within the TTL: the row read before
    later = time.monotonic() + servers_mod.SERVER_TTL + 1
    monkeypatch.setattr(servers_mod, "time", SimpleNamespace(monotonic=lambda: later))
    again = cache.row(server.id)
    assert again.name == "renamed" and again is not first
    assert cache.executor(again) is not cache.executor(first)


def test_prefetch_reads_the_stale_rows_in_one_query_and_row_then_reads_none(tmp_path):
    cache = make(tmp_path)
    ids = [local_server(f"s{n}").id for n in range(30)]
    cache.row(ids[0])
    assert reads_of_servers(lambda: cache.prefetch([*ids, None, ids[1]])) == 1
    assert reads_of_servers(lambda: [cache.row(sid) for sid in ids]) == 0
    assert reads_of_servers(lambda: cache.prefetch(ids)) == 0  # all fresh: no query
