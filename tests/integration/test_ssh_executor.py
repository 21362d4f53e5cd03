"""The SSH executor against a real OpenSSH sshd: output, exit codes, scripts, cancel and timeout."""

from __future__ import annotations

import random
import threading
import time

import pytest

from remora.executor.base import BufferSink, ExecRequest
from remora.executor.ssh import SSHExecutor
from remora.executor.sshpool import SSHPool
from remora.models import Job
from tests.support.sshd import wait_no_process
from tests.support.waits import wait_for
from tests.support.workerkit import init_db, kill_sessions, make_settings, pooled, ssh_target

pytestmark = pytest.mark.ssh


@pytest.fixture(params=["libssh2", "paramiko"])
def settings(tmp_path, request):
    """Every test runs over both SSH transports (``ssh.transport``)."""
    init_db(tmp_path)
    return make_settings(tmp_path, {"ssh.transport": request.param})


@pytest.fixture
def pool():
    p = SSHPool(max_sessions=8, idle_timeout=60)
    yield p
    p.close()


@pytest.fixture
def ex(sshd, settings, pool) -> SSHExecutor:
    return SSHExecutor(ssh_target(sshd), settings, pool=pool)


def run(ex: SSHExecutor, req: ExecRequest, cancel: threading.Event | None = None) -> tuple:
    sink = BufferSink()
    return ex.run(req, sink, cancel or threading.Event()), sink


def test_exit_code_and_streams_apart_byte_exact(ex):
    res, sink = run(ex, ExecRequest(command=r"printf 'a\n\nb\r\n\377'; printf 'oops\n' >&2; exit 3"))
    assert res.exit_code == 3 and res.error_kind is None and res.signal is None
    assert bytes(sink.stdout) == b"a\n\nb\r\n\xff" and bytes(sink.stderr) == b"oops\n"
    assert res.remote_pid and sink.pid == res.remote_pid


def test_command_with_args_runs_in_the_login_shell(ex):
    res, sink = run(ex, ExecRequest(command="echo", args="hello   world"))
    assert res.exit_code == 0 and bytes(sink.stdout) == b"hello world\n"


def test_script_with_args_env_and_workdir(ex):
    script = '#!/bin/bash\nset -e\necho "$1|$2|$GREETING"\npwd\nexit 5\n'
    res, sink = run(ex, ExecRequest(script=script, args="'a b' c", env={"GREETING": "it's me"}, workdir="/tmp", shell="/bin/bash"))
    assert res.exit_code == 5
    assert bytes(sink.stdout) == b"a b|c|it's me\n/tmp\n"


def test_script_shell_must_be_allowed(ex):
    res, _ = run(ex, ExecRequest(script="print(1)", shell="/usr/bin/python3"))
    assert res.error_kind == "internal" and "not allowed" in res.error


def test_large_output_is_complete(ex):
    res, sink = run(ex, ExecRequest(command="head -c 5000000 /dev/zero | tr '\\0' 'x'; echo end >&2"))
    assert res.exit_code == 0 and len(sink.stdout) == 5_000_000 and bytes(sink.stderr) == b"end\n"


def test_output_streams_while_running_even_from_block_buffering_programs(ex):
    sink = BufferSink()
    req = ExecRequest(command="(echo first; sleep 1.5; echo second) | sed -n p")
    t = threading.Thread(target=ex.run, args=(req, sink, threading.Event()), daemon=True)
    t.start()
    wait_for(lambda: bytes(sink.stdout) == b"first\n", 1.2, what="first line before the command ends")
    t.join(5)
    assert bytes(sink.stdout) == b"first\nsecond\n"


def test_pty_on_request(ex):
    res, sink = run(ex, ExecRequest(command="test -t 1 && echo tty", pty=True))
    assert res.exit_code == 0 and bytes(sink.stdout) == b"tty\r\n"


def test_a_background_child_holding_stdout_does_not_hang_the_job(ex, sshd):
    """The job ends DRAIN_AFTER_EXIT after its exit status, though a child it left still holds the pipe."""
    start = time.monotonic()
    res, sink = run(ex, ExecRequest(command="sleep 1014 & echo done"))
    took = time.monotonic() - start
    sshd.run("pkill -f '[s]leep 1014'")
    assert (res.exit_code, res.error, bytes(sink.stdout)) == (0, "", b"done\n") and took < 4, took


def test_killed_by_signal_is_reported(ex):
    res, _ = run(ex, ExecRequest(command="kill -s KILL $$"))
    assert res.exit_code is None and res.signal == "KILL"


def test_cancel_kills_the_remote_sleep(ex, sshd):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    res, _ = run(ex, ExecRequest(command="sleep 1021"), cancel)
    assert res.error_kind == "canceled" and res.signal in ("TERM", "KILL")
    assert wait_no_process(sshd, "sleep 1021", timeout=3)


def test_cancel_kills_a_scripts_child_tree(ex, sshd):
    cancel = threading.Event()
    threading.Timer(0.7, cancel.set).start()
    script = "bash -c 'sleep 1022; echo never' &\nsh -c 'sleep 1022'\n"
    res, _ = run(ex, ExecRequest(script=script, shell="/bin/bash"), cancel)
    assert res.error_kind == "canceled"
    assert wait_no_process(sshd, "sleep 1022", timeout=3)


def test_timeout_kills_and_escalates_to_kill(ex, sshd):
    start = time.monotonic()
    res, _ = run(ex, ExecRequest(script="trap '' TERM\nsleep 1023 &\nwait\nsleep 1023\n", shell="/bin/bash", timeout=0.5))
    assert res.error_kind == "timeout" and res.error == "timeout after 0.5s" and res.signal == "KILL"
    assert time.monotonic() - start < 5
    assert wait_no_process(sshd, "sleep 1023", timeout=3)


def test_kill_stale_kills_what_a_dead_worker_left(ex, sshd):
    seconds = random.randint(10**6, 10**7)  # unique: other runs on this machine leave theirs alone
    cmd = f"REMORA_JOB_ID=j1 setsid sh -c 'sleep {seconds} & sleep {seconds}; :' >/dev/null 2>&1 < /dev/null & echo started"
    assert "started" in sshd.run(cmd).stdout
    pid = int(wait_for(lambda: sshd.run(f"pgrep -o -f '^sh -c [s]leep {seconds}'").stdout.strip(), 5, what="stale session"))
    assert not ex.kill_stale(pid, "REMORA_JOB_ID=other")  # a reused pid is left alone
    assert ex.kill_stale(pid, "REMORA_JOB_ID=j1")
    assert wait_no_process(sshd, f"sleep {seconds}", timeout=3)


def test_unreachable_server_fails_after_retries_with_each_attempt_recorded(tmp_path, settings, pool, sshd):
    target = ssh_target(sshd, name="down", port=1)  # nothing listens there
    res, _ = run(SSHExecutor(target, settings, pool=pool), ExecRequest(command="true"))
    assert res.error_kind == "connection" and "after 2 attempt(s)" in res.error and "cannot connect" in res.error
    assert len(res.attempt_errors) == 2 and res.attempt_errors[0].startswith("attempt 1: ")


def test_dead_pooled_transport_is_replaced(ex, sshd, pool):
    assert run(ex, ExecRequest(command="true"))[0].exit_code == 0
    assert len(pooled(pool)) == 1
    assert kill_sessions(sshd) > 0
    wait_for(lambda: not any(c.alive() for c in pooled(pool)), 5)
    res, sink = run(ex, ExecRequest(command="echo again"))
    assert res.exit_code == 0 and bytes(sink.stdout) == b"again\n" and not res.attempt_errors


def test_connection_lost_mid_command_fails_with_a_clear_error(ex, sshd):
    threading.Timer(0.7, kill_sessions, args=(sshd,)).start()
    res, _ = run(ex, ExecRequest(command="echo started; sleep 1025"))
    assert res.error_kind == "connection" and "lost while the command was running" in res.error
    assert Job is not None
