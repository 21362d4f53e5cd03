"""The queue's log and snapshot files are 0600 and its directory 0700, whatever the umask or the directory's mode."""

from __future__ import annotations

import os
import stat

from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer


def test_log_and_snapshot_files_are_private_even_with_umask_000(tmp_path):
    queue_dir = tmp_path / "q"
    old = os.umask(0)
    try:
        server = QueueServer(port=0, data_dir=queue_dir, token="t")
        server.start()
        try:
            host, port = server.address
            with QueueClient(f"{host}:{port}", token="t") as client:
                client.put("a")
                client.snapshot()  # writes snapshot.1 (through snapshot.1.tmp) and wal.1
                client.put("b")
        finally:
            server.stop()
        files = sorted(queue_dir.iterdir())
        assert {f.name for f in files} >= {"snapshot.1", "wal.1"}
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}
        assert stat.S_IMODE(queue_dir.stat().st_mode) == 0o700

        queue_dir.chmod(0o777)  # a directory made wide by hand is narrowed on the next start
        (queue_dir / "wal.1").chmod(0o666)
        server = QueueServer(port=0, data_dir=queue_dir)
        server.start()
        server.stop()
        assert stat.S_IMODE(queue_dir.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in queue_dir.iterdir())
    finally:
        os.umask(old)
