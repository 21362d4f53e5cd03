"""Output that is binary, invalid UTF-8, one 10 MB line, or over the output cap.

`remora up` runs as a process with a 12 MB output cap.  Each job's output is
stored byte for byte (up to the cap), served raw byte for byte, served as JSON
(decoded with replacement characters, never a 500), and readable in slices;
the job itself completes.  Nothing crashes: the server answers /health after.
"""

from __future__ import annotations

import os

import pytest

from remora.client import Client
from tests.support.cluster import make_remora
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

CAP = 12 * 1024 * 1024


def test_binary_invalid_utf8_huge_lines_and_over_cap_output(tmp_path):
    blob = os.urandom(256 * 1024)
    (tmp_path / "blob.bin").write_bytes(blob)
    bad_utf8 = b"ok \xff\xfe \xc3\x28 \xed\xa0\x80 \x00 end\r\n"
    (tmp_path / "bad.txt").write_bytes(bad_utf8)
    remora = make_remora("checkout", tmp_path, None)
    remora.env["REMORA_OUTPUT_MAX_BYTES"] = str(CAP)
    # the jobs read files in tmp_path (the test's own, 0700): they run as this account, not worker.local_user
    (tmp_path / "remora.toml").write_text('[worker]\nlocal_user = ""\n')
    remora.env["REMORA_CONFIG"] = str(tmp_path / "remora.toml")
    remora.start(workers=4)
    try:
        client = Client(remora.url, (remora.data_dir / "admin.token").read_text().strip(), timeout=60)
        local = next(s["id"] for s in client.servers() if s["name"] == "local")
        commands = {
            "binary": f"cat {tmp_path / 'blob.bin'}",
            "utf8": f"cat {tmp_path / 'bad.txt'}; cat {tmp_path / 'bad.txt'} >&2",
            "line": "head -c 10485760 /dev/zero | tr '\\0' 'a'; echo",
            "overcap": "head -c 20971520 /dev/zero | tr '\\0' 'b'",
        }
        jobs = {name: client.submit({"command": cmd, "server_id": local, "timeout": 120})[0]["id"] for name, cmd in commands.items()}

        def all_done() -> bool:
            return all(client.job(j)["status"] in ("completed", "failed") for j in jobs.values())

        wait_for(all_done, 90, interval=0.3, what="the four jobs to finish")
        for name, job_id in jobs.items():
            assert client.job(job_id)["status"] == "completed", (name, client.job(job_id))

        assert client.job_stream(jobs["binary"], "stdout") == blob
        assert client.job_stream(jobs["utf8"], "stdout") == bad_utf8
        assert client.job_stream(jobs["utf8"], "stderr") == bad_utf8
        line = client.job_stream(jobs["line"], "stdout")
        assert line == b"a" * 10485760 + b"\n"
        over = client.job_stream(jobs["overcap"], "stdout")
        assert len(over) <= CAP + 200 and over.startswith(b"b" * 1000) and b"output truncated" in over[-200:]
        detail = client.job(jobs["overcap"])
        assert detail["output_truncated"] is True

        for name, job_id in jobs.items():  # the JSON views decode what they can and never fail
            logs = client.job_logs(job_id)
            assert isinstance(logs["stdout"], str), name
            part = client.job_logs(job_id, stdout_offset=5, stderr_offset=0)
            assert isinstance(part["stdout"], str) and part["next_stdout_offset"] >= 5, name
        assert "\ufffd" in client.job_logs(jobs["utf8"])["stdout"]
        assert client.health()["status"] == "healthy"
    finally:
        remora.stop(timeout=30)
