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

from remora.executor.base import BufferSink, ExecRequest, Stream
from remora.executor.local import LIBSTDBUF, LocalExecutor, local_command
from tests.support.waits import wait_for
from tests.support.workerkit import make_settings


@pytest.fixture
def ex(tmp_path) -> LocalExecutor:
    """Jobs as the test's own account (these tests use its temp dirs)."""
    return LocalExecutor(make_settings(tmp_path, {"worker.local_user": ""}))


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


def test_a_job_gets_stdbufs_environment_without_stdbufs_exec():
    assert LIBSTDBUF is not None  # coreutils' libstdbuf.so is on this machine: the sed test above ran without stdbuf's exec
    argv, _, env = local_command(ExecRequest(command="true"), stdbuf=True, libstdbuf=LIBSTDBUF)
    assert argv == ["/bin/sh", "-c", "true"]
    assert env[b"LD_PRELOAD"].split(b":")[-1] == LIBSTDBUF.encode() and env[b"_STDBUF_O"] == env[b"_STDBUF_E"] == b"L"
    argv, _, env = local_command(ExecRequest(command="true"), stdbuf=True, libstdbuf=None)  # library elsewhere: stdbuf runs
    assert argv[:3] == ["stdbuf", "-oL", "-eL"] and b"_STDBUF_O" not in env


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


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running local jobs as another user needs root")


@pytest.fixture
def open_dir():
    """A directory every user may enter and write to, like /tmp (the test's tmp_path is root's own, 0700)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="remora-local-user-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_a_root_worker_runs_local_jobs_as_the_local_user(tmp_path, open_dir):
    import pwd

    nobody = pwd.getpwnam("nobody")
    ex = LocalExecutor(make_settings(tmp_path))  # worker.local_user defaults to nobody
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("s3cret\n")
    sink = BufferSink()
    command = f"id -u; id -g; echo $HOME $USER $LOGNAME; pwd; cat {private}/secret; touch {open_dir}/made-by-job; true"
    res = ex.run(ExecRequest(command=command), sink, threading.Event())
    assert res.exit_code == 0, bytes(sink.stderr)
    lines = bytes(sink.stdout).decode().splitlines()
    cwd = nobody.pw_dir if os.path.isdir(nobody.pw_dir) else "/"
    assert lines == [str(nobody.pw_uid), str(nobody.pw_gid), f"{nobody.pw_dir} nobody nobody", cwd], lines
    assert b"Permission denied" in bytes(sink.stderr) and b"s3cret" not in bytes(sink.stdout)
    assert (open_dir / "made-by-job").stat().st_uid == nobody.pw_uid


@needs_root
def test_a_workdir_the_local_user_cannot_enter_fails_like_cd(tmp_path, open_dir):
    ex = LocalExecutor(make_settings(tmp_path))
    sink = BufferSink()
    res = ex.run(ExecRequest(command="pwd", workdir=str(tmp_path)), sink, threading.Event())
    assert res.exit_code == 1 and b"Permission denied" in bytes(sink.stderr) and not sink.stdout
    sink = BufferSink()
    res = ex.run(ExecRequest(command="pwd", workdir=str(open_dir)), sink, threading.Event())
    assert res.exit_code == 0 and bytes(sink.stdout) == f"{open_dir}\n".encode()


@needs_root
def test_a_canceled_job_of_the_local_user_is_killed(tmp_path):
    ex = LocalExecutor(make_settings(tmp_path))
    marker = f"sleep {random.randint(100_000, 999_999)}"
    cancel = threading.Event()
    sink = BufferSink()
    done: list = []
    thread = threading.Thread(target=lambda: done.append(ex.run(ExecRequest(command=f"{marker}; :"), sink, cancel)))
    thread.start()
    wait_for(lambda: not no_process(marker), 10, what="the job to start")
    cancel.set()
    thread.join(10)
    assert done and done[0].error_kind == "canceled"
    wait_for(lambda: no_process(marker), 10, what="the job's process to be gone")


def test_an_unknown_local_user_fails_the_job_naming_the_setting(tmp_path):
    ex = LocalExecutor(make_settings(tmp_path, {"worker.local_user": "no-such-user-remora"}))
    res = ex.run(ExecRequest(command="true"), BufferSink(), threading.Event())
    if os.geteuid() == 0:
        assert res.error_kind == "internal" and "worker.local_user" in res.error and "no-such-user-remora" in res.error
    else:  # not root: the setting does not apply, the job runs as this account
        assert res.exit_code == 0
