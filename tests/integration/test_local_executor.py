"""The local executor: real subprocesses in their own process group."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from remora.executor.base import BufferSink, ExecRequest
from remora.executor.local import LocalExecutor
from remora.models import Stream
from tests.support.waits import wait_for
from tests.support.workerkit import make_settings


@pytest.fixture
def ex(tmp_path) -> LocalExecutor:
    return LocalExecutor(make_settings(tmp_path))


def no_process(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"[{pattern[0]}]{pattern[1:]}"], capture_output=True).returncode == 1


def test_exit_code_and_byte_exact_streams_apart(ex):
    sink = BufferSink()
    res = ex.run(ExecRequest(command=r"printf 'a\n\nb\r\n\377'; printf 'oops\n' >&2; exit 3"), sink, threading.Event())
    assert res.exit_code == 3 and res.error_kind is None and res.signal is None
    assert bytes(sink.stdout) == b"a\n\nb\r\n\xff" and bytes(sink.stderr) == b"oops\n"
    assert res.remote_pid and res.started_at <= res.finished_at


def test_script_args_env_and_workdir(ex, tmp_path):
    sink = BufferSink()
    req = ExecRequest(script='echo "$1/$2/$GREETING"; pwd', args="'x y' z", env={"GREETING": "hi there"}, workdir=str(tmp_path))
    res = ex.run(req, sink, threading.Event())
    assert res.exit_code == 0
    assert bytes(sink.stdout) == f"x y/z/hi there\n{tmp_path}\n".encode()


def test_remoras_secrets_are_not_passed_on_but_the_rest_of_the_environment_is(ex, monkeypatch):
    secrets = {"DATABASE_URL": "postgres://u:pw@db/r", "REMORA_SECRET_KEY": "k1", "REMORA_QUEUE_TOKEN": "t1", "REMORA_TOKEN": "t2"}
    for name, value in {**secrets, "REMORA_QUEUE_ADDR": "127.0.0.1:9000", "SITE_LABEL": "blue"}.items():
        monkeypatch.setenv(name, value)
    sink = BufferSink()
    res = ex.run(ExecRequest(command="env", env={"REMORA_TOKEN": "given-by-the-job"}), sink, threading.Event())
    assert res.exit_code == 0
    seen = dict(line.split("=", 1) for line in bytes(sink.stdout).decode().splitlines() if "=" in line)
    assert not {"DATABASE_URL", "REMORA_SECRET_KEY", "REMORA_QUEUE_TOKEN"} & seen.keys()
    assert seen["REMORA_TOKEN"] == "given-by-the-job"  # a job's own env wins
    assert seen["SITE_LABEL"] == "blue" and seen["REMORA_QUEUE_ADDR"] == "127.0.0.1:9000"
    assert seen["PATH"] == os.environ["PATH"]


def test_disallowed_shell_is_refused_before_running(ex):
    res = ex.run(ExecRequest(script="echo hi", shell="/usr/bin/python3"), BufferSink(), threading.Event())
    assert res.error_kind == "internal" and "not allowed" in res.error and res.exit_code is None


def test_output_streams_while_running(ex):
    sink = BufferSink()
    done = threading.Event()
    req = ExecRequest(command="echo first; sleep 2; echo second")
    threading.Thread(target=lambda: (ex.run(req, sink, threading.Event()), done.set()), daemon=True).start()
    wait_for(lambda: bytes(sink.stdout) == b"first\n", 1.5, what="first line")
    assert not done.is_set()
    wait_for(done.is_set, 5)
    assert bytes(sink.stdout) == b"first\nsecond\n"


def test_block_buffered_programs_stream_line_by_line(ex):
    sink = BufferSink()
    req = ExecRequest(command="(echo first; sleep 2; echo second) | sed -n p")
    t = threading.Thread(target=ex.run, args=(req, sink, threading.Event()), daemon=True)
    t.start()
    wait_for(lambda: bytes(sink.stdout) == b"first\n", 1.5, what="line-buffered sed output")
    t.join(5)


def test_timeout_kills_the_whole_process_group(ex):
    start = time.monotonic()
    res = ex.run(ExecRequest(command="sh -c 'sleep 1011' & sleep 1011", timeout=0.5), BufferSink(), threading.Event())
    assert res.error_kind == "timeout" and res.error == "timeout after 0.5s" and res.signal == "TERM"
    assert time.monotonic() - start < 3
    wait_for(lambda: no_process("sleep 1011"), 3, what="no sleep 1011 left")


def test_cancel_escalates_to_kill_when_term_is_ignored(ex):
    cancel = threading.Event()
    sink = BufferSink()
    req = ExecRequest(script="trap '' TERM; echo ready; sleep 1012 & wait; sleep 1012", shell="/bin/bash")
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    res = ex.run(req, sink, cancel)
    assert res.error_kind == "canceled" and res.signal == "KILL"
    assert 1.0 <= time.monotonic() - start < 4  # kill_grace is 1 s in these settings
    wait_for(lambda: no_process("sleep 1012"), 3, what="no sleep 1012 left")


def test_background_child_holding_the_pipe_does_not_hang_the_job(ex):
    start = time.monotonic()
    res = ex.run(ExecRequest(command="sleep 1013 & echo done"), BufferSink(), threading.Event())
    assert res.exit_code == 0 and time.monotonic() - start < 3
    subprocess.run(["pkill", "-f", "[s]leep 1013"])


def test_pty_merges_streams_through_a_terminal(ex):
    sink = BufferSink()
    res = ex.run(ExecRequest(command="test -t 1 && echo tty; echo err >&2", pty=True), sink, threading.Event())
    assert res.exit_code == 0
    assert bytes(sink.stdout) == b"tty\r\nerr\r\n" and not sink.stderr
    assert [s for s, _ in sink.chunks] == [Stream.STDOUT] * len(sink.chunks)


def test_kill_stale_kills_a_left_behind_session_that_carries_the_marker(ex):
    env = {**os.environ, "REMORA_JOB_ID": "job-1"}
    sleep = f"sleep {random.randint(10**6, 10**7)}"  # unique: other runs on this machine leave theirs alone
    proc = subprocess.Popen(["sh", "-c", f"{sleep} & {sleep}"], start_new_session=True, env=env)
    try:
        assert not ex.kill_stale(proc.pid, "REMORA_JOB_ID=job-2") and proc.poll() is None
        assert ex.kill_stale(proc.pid, "REMORA_JOB_ID=job-1")
        proc.wait(5)
        wait_for(lambda: no_process(sleep), 3)
    finally:  # never leave the group behind for the next run to trip over
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    plain = subprocess.Popen(["sleep", "5"])  # not a session leader: refused, left alone
    try:
        assert not ex.kill_stale(plain.pid) and plain.poll() is None
    finally:
        plain.kill()
        plain.wait()
