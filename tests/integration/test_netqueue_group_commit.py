"""fsync = always: the I/O thread syncs the log itself (no hand-off to the commit thread per fsync),
concurrent writers still share fsyncs (group commit), and every acknowledged PUT is durable."""

from __future__ import annotations

import threading

from remora.netqueue.client import QueueClient
from remora.netqueue.engine import Engine
from remora.netqueue.server import QueueServer
from remora.netqueue.wal import WriteAheadLog


def test_a_lone_writer_is_synced_inline_and_each_acknowledged_put_is_on_disk(tmp_path):
    srv = QueueServer(port=0, data_dir=tmp_path / "q", fsync="always", token="t")
    srv.start()
    try:
        with QueueClient(f"127.0.0.1:{srv.address[1]}", token="t") as client:
            for i in range(50):
                assert client.put(f"j{i}") is True
                assert srv.wal is not None and srv.wal.durable >= srv.wal.written  # nothing acknowledged ahead of the disk
            wal = client.stats()["wal"]
        assert wal["fsyncs"] >= 50
        assert wal["fsyncs_inline"] >= 45, wal  # sequential PUTs: the I/O thread syncs them itself
    finally:
        srv.stop()
    recovered = Engine()
    WriteAheadLog(tmp_path / "q").recover(recovered)
    assert len(recovered.jobs) == 50


def test_concurrent_writers_still_share_fsyncs(tmp_path):
    srv = QueueServer(port=0, data_dir=tmp_path / "q", fsync="always", token="t")
    srv.start()
    clients, per_client = 8, 150
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with QueueClient(f"127.0.0.1:{srv.address[1]}", token="t") as client:
                for i in range(per_client):
                    client.put(f"w{n}-{i}")
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        with QueueClient(f"127.0.0.1:{srv.address[1]}", token="t") as client:
            stats = client.stats()
        assert stats["jobs"] == clients * per_client
        # one fsync per PUT would be clients * per_client; group commit covers several PUTs per fsync
        assert stats["wal"]["fsyncs"] < 0.7 * clients * per_client, stats["wal"]
        # and the I/O thread ran those syncs itself (no hand-off to the sync thread and back per batch)
        assert stats["wal"]["fsyncs_inline"] >= 0.8 * stats["wal"]["fsyncs"], stats["wal"]
    finally:
        srv.stop()


def test_no_busy_poll_after_an_inline_fsync(tmp_path):
    """A request that waited for the disk costs a sync anyway: spinning for the writer's next request
    would only add CPU (measured: 82 vs 65 us of server CPU per sequential PUT, the same rate)."""
    srv = QueueServer(port=0, data_dir=tmp_path / "q", fsync="always", token="t", busy_poll=0.002)
    srv.start()
    try:
        with QueueClient(f"127.0.0.1:{srv.address[1]}", token="t") as client:
            for i in range(100):
                assert client.put(f"j{i}") is True
            server = client.stats()["server"]
        assert server["window_us"] == 2000
        assert server["spin_hits"] + server["spin_misses"] <= 5, server  # connection set-up only (HELLO after the accept)
    finally:
        srv.stop()
