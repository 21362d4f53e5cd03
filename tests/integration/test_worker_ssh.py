"""The worker end to end over SSH: real NetQueue, real OpenSSH sshd, SQLite in tmp_path."""

from __future__ import annotations

import time

import pytest

from remora import output
from remora.executor.base import Stream
from remora.models import AuthType, Job
from tests.support.sshd import wait_no_process
from tests.support.waits import wait_for
from tests.support.workerkit import add_server, pool_opened, stop_and_drop, submit, wait_status, worker_stack

pytestmark = pytest.mark.ssh


@pytest.fixture
def env(tmp_path):
    with worker_stack(tmp_path, concurrency=8) as stack:
        yield stack


def test_stdout_grows_in_the_database_while_the_job_runs(env, sshd):
    settings, q, _, box = env
    server = add_server(box, sshd)
    job = submit(q, server, settings, command="for i in 1 2 3; do echo line $i; echo err $i >&2; sleep 0.6; done")
    wait_for(lambda: output.read_stream(job.id, Stream.STDOUT).startswith(b"line 1\n"), 1.5, what="first line")
    assert Job.get_by_id(job.id).status == "running"
    partial = output.read_stream(job.id, Stream.STDOUT)
    row = wait_status(job.id)
    assert row.status == "completed" and row.exit_code == 0
    assert len(partial) < len(output.read_stream(job.id, Stream.STDOUT)) == len(b"line 1\nline 2\nline 3\n")
    assert output.read_stream(job.id, Stream.STDERR) == b"err 1\nerr 2\nerr 3\n"


def test_script_job_with_args_and_exit_code(env, sshd):
    settings, q, _, box = env
    server = add_server(box, sshd)
    job = submit(q, server, settings, script='#!/bin/bash\necho "[$1] [$2]"\nexit 4\n', args="'one two' three", shell="/bin/bash")
    row = wait_status(job.id)
    assert row.status == "failed" and row.exit_code == 4 and row.error == "exit code 4"
    assert output.read_stream(job.id, Stream.STDOUT) == b"[one two] [three]\n"


def test_cancel_of_a_running_job_kills_the_remote_tree_within_a_second(env, sshd):
    settings, q, _, box = env
    server = add_server(box, sshd)
    job = submit(q, server, settings, script="sleep 1041 &\nbash -c 'sleep 1041'\n", shell="/bin/bash")
    wait_for(lambda: Job.get_by_id(job.id).remote_pid, 5, what="remote pid recorded")
    started = time.monotonic()
    Job.update(cancel_requested=True).where(Job.id == job.id).execute()
    q.cancel(job.id)
    row = wait_status(job.id, "canceled", timeout=5)
    assert time.monotonic() - started < 2.5 and row.error == "canceled"
    assert wait_no_process(sshd, "sleep 1041", timeout=3)


def test_job_on_a_server_whose_pem_file_is_gone_fails_with_an_auth_error_naming_it(env, sshd):
    settings, q, _, box = env
    server = add_server(box, sshd, name="pem-gone", auth_type=AuthType.PEM.value, pem_file="gone.pem", private_key=None)
    job = submit(q, server, settings, command="true")
    row = wait_status(job.id)
    assert row.status == "failed" and row.error == "server pem-gone: PEM key 'gone.pem' not found"  # not an internal error


def test_timeout_over_ssh_fails_the_job_and_kills_the_process(env, sshd):
    settings, q, _, box = env
    server = add_server(box, sshd)
    job = submit(q, server, settings, command="sleep 1042", timeout=1)
    row = wait_status(job.id)
    assert row.status == "failed" and row.error == "timeout after 1s" and row.signal == "TERM"
    assert wait_no_process(sshd, "sleep 1042", timeout=3)


def test_20_concurrent_jobs_on_2_servers(env, make_sshd):
    settings, q, worker, box = env
    servers = [add_server(box, make_sshd(host)) for host in ("127.0.0.2", "127.0.0.3")]
    jobs = [submit(q, servers[i % 2], settings, command=f"echo job {i}; hostname >/dev/null; sleep 0.3") for i in range(20)]
    for i, job in enumerate(jobs):
        row = wait_status(job.id, timeout=30)
        assert row.status == "completed", row.error
        assert output.read_stream(job.id, Stream.STDOUT) == f"job {i}\n".encode()
    assert {Job.get_by_id(j.id).worker for j in jobs} == {worker.id}
    assert pool_opened(worker.pool) == 2  # one pooled connection per server


def test_sshd_gone_mid_job_fails_it_clearly_and_the_worker_goes_on(env, make_sshd):
    settings, q, _, box = env
    srv = make_sshd("127.0.0.1")
    server = add_server(box, srv)
    job = submit(q, server, settings, command="echo started; sleep 1043")
    wait_for(lambda: output.read_stream(job.id, Stream.STDOUT) == b"started\n", 5, what="job running")
    stop_and_drop(srv)
    row = wait_status(job.id, timeout=10)
    assert row.status == "failed" and "lost while the command was running" in row.error
    down = wait_status(submit(q, server, settings, command="true").id, timeout=15)
    assert down.status == "failed" and "cannot connect" in down.error and len(down.attempt_errors) == 2
    srv.start()
    ok = wait_status(submit(q, server, settings, command="echo back").id, timeout=15)
    assert ok.status == "completed" and output.read_stream(ok.id, Stream.STDOUT) == b"back\n"


def test_host_key_change_fails_the_job_naming_both_fingerprints(env, make_sshd):
    settings, q, _, box = env
    srv = make_sshd("127.0.0.1")
    server = add_server(box, srv)
    assert wait_status(submit(q, server, settings, command="true").id).status == "completed"
    old = srv.host_key_fingerprint()
    stop_and_drop(srv)
    srv.regenerate_host_key()
    srv.start()
    row = wait_status(submit(q, server, settings, command="true").id, timeout=15)
    assert row.status == "failed" and old in row.error and srv.host_key_fingerprint() in row.error
    assert not row.attempt_errors  # host-key failures are never retried


def test_jobs_on_a_warm_session_start_on_the_dispatcher_not_the_start_threads(env, sshd, monkeypatch):
    """A start that waits for nothing (a pooled session has room) is done at once, the loop woken once for
    all; only a start that must connect goes to the start threads."""
    settings, q, worker, box = env
    server = add_server(box, sshd)
    handed: list[str] = []
    submit_start = worker._starters.submit
    monkeypatch.setattr(worker._starters, "submit", lambda fn, job, active: (handed.append(job.id), submit_start(fn, job, active)))
    cold = submit(q, server, settings, command="echo cold")
    assert wait_status(cold.id).status == "completed"
    assert handed == [cold.id]  # the first job connects: on a start thread
    assert worker.servers.executor(server).starts_at_once(worker.loop)  # its pooled libssh2 session has room
    warm = [submit(q, server, settings, command=f"echo warm {i}") for i in range(6)]
    rows = [wait_status(job.id) for job in warm]
    assert [row.status for row in rows] == ["completed"] * 6
    assert [output.read_stream(job.id, Stream.STDOUT) for job in warm] == [f"warm {i}\n".encode() for i in range(6)]
    assert handed == [cold.id]
