"""The shared shell wrapper and request checks (run under a real /bin/sh, no network)."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import pytest

from remora.errors import ValidationError
from remora.executor import base
from remora.executor.base import (
    ExecRequest,
    build_wrapper,
    check_request,
    command_text,
    parse_pid_line,
    plain_words,
    script_args,
    signal_name,
)
from remora.executor.local import LIBSTDBUF

ALLOWED = ["/bin/bash", "/bin/sh"]


def run_wrapper(request: ExecRequest, **kw) -> subprocess.CompletedProcess:
    wrapper = build_wrapper(request, stdbuf=False, print_pid=kw.get("print_pid", False))
    return subprocess.run(["/bin/sh", "-c", wrapper.text], input=wrapper.stdin, capture_output=True, timeout=10)


def test_command_text_appends_string_args_as_written_and_quotes_list_args():
    assert command_text(ExecRequest(command="ls", args="-la /tmp")) == "ls -la /tmp"
    assert command_text(ExecRequest(command="echo", args=["a b", "$HOME"])) == "echo 'a b' '$HOME'"
    assert command_text(ExecRequest(command="uptime")) == "uptime"


def test_script_args_are_split_like_a_shell():
    assert script_args(ExecRequest(script="x", args="'a b' c")) == ["a b", "c"]
    with pytest.raises(ValidationError):
        script_args(ExecRequest(script="x", args="'unclosed"))


def test_only_allowed_shells_run_scripts():
    check_request(ExecRequest(script="echo", shell="/bin/sh"), ALLOWED)
    with pytest.raises(ValidationError, match="not allowed"):
        check_request(ExecRequest(script="echo", shell="/usr/bin/python3"), ALLOWED)
    with pytest.raises(ValidationError, match="not allowed"):
        check_request(ExecRequest(command="echo", shell="/tmp/evil"), ALLOWED)


def test_env_names_must_be_identifiers():
    with pytest.raises(ValidationError, match="variable name"):
        check_request(ExecRequest(command="true", env={"A;rm -rf /": "x"}), ALLOWED)


def test_empty_command_is_refused():
    with pytest.raises(ValidationError, match="empty"):
        check_request(ExecRequest(command="  "), ALLOWED)


def test_script_with_quotes_and_args_runs_verbatim_from_stdin():
    script = "#!/bin/bash\necho \"1=$1 2=$2 n=$#\"\necho 'single '\"'\"' quote' \\\\ $((1+2))\nexit 7\n"
    res = run_wrapper(ExecRequest(script=script, args="'a b' 'c'\"'\"'d'", shell="/bin/sh"))
    assert res.returncode == 7
    assert res.stdout == b"1=a b 2=c'd n=2\nsingle ' quote \\ 3\n"


def test_env_and_workdir_are_applied(tmp_path):
    res = run_wrapper(ExecRequest(command='printf "%s|" "$X" "$(pwd)"', env={"X": "it's $HOME `x`"}, workdir=str(tmp_path)))
    assert res.stdout.decode() == f"it's $HOME `x`|{tmp_path}|"


def test_missing_workdir_fails_with_exit_1(tmp_path):
    res = run_wrapper(ExecRequest(command="echo never", workdir=str(tmp_path / "nope")))
    assert res.returncode == 1 and res.stdout == b""


def test_wrapper_prints_pid_first_and_exit_code_is_the_commands():
    res = run_wrapper(ExecRequest(command="echo out; exit 42"), print_pid=True)
    first, rest = res.stdout.split(b"\n", 1)
    assert first.startswith(b"remora-pid:") and first[11:].isdigit()
    assert rest == b"out\n" and res.returncode == 42


def test_pty_script_is_passed_as_an_argument():
    wrapper = build_wrapper(ExecRequest(script="echo $1", args="x", pty=True), stdbuf=False, print_pid=False)
    assert wrapper.stdin is None
    res = subprocess.run(["/bin/sh", "-c", wrapper.text], capture_output=True, timeout=10)
    assert res.stdout == b"x\n"


def test_stdbuf_prefix_and_python_unbuffered():
    text = build_wrapper(ExecRequest(command="true"), stdbuf=True, print_pid=False).text
    assert "exec stdbuf -oL -eL" in text and "PYTHONUNBUFFERED=1" in text
    text = build_wrapper(ExecRequest(command="true", env={"PYTHONUNBUFFERED": ""}), stdbuf=True, print_pid=False).text
    assert "PYTHONUNBUFFERED=1" not in text


def test_signal_names():
    assert signal_name(15) == "TERM" and signal_name("SIGKILL") == "KILL" and signal_name("INT") == "INT"


def test_a_wrapper_that_does_not_know_yet_finds_libstdbuf_itself_and_reports_it_on_the_pid_line(tmp_path, monkeypatch):
    request = ExecRequest(command='echo "$REMORA_JOB_ID $PYTHONUNBUFFERED $_STDBUF_O$_STDBUF_E $LD_PRELOAD"', env={"REMORA_JOB_ID": "j1"})
    lib = LIBSTDBUF
    assert lib in base.LIBSTDBUF_PATHS  # coreutils' stdbuf and its library are on this machine
    wrapper = build_wrapper(request, stdbuf=None, print_pid=True)
    res = subprocess.run(
        ["/bin/sh", "-c", wrapper.text], capture_output=True, timeout=10, env={"PATH": os.environ["PATH"], "LD_PRELOAD": ""}
    )
    pid_line, out = res.stdout.split(b"\n", 1)
    pid, found = parse_pid_line(pid_line)
    assert pid and found == lib and out == f"j1 1 LL {lib}\n".encode()  # what `stdbuf -oL -eL` would set
    # a host whose libstdbuf.so is elsewhere: stdbuf itself is run (reported as 1), and without it nothing (0)
    monkeypatch.setattr(base, "LIBSTDBUF_PATHS", (str(tmp_path / "nowhere" / "libstdbuf.so"),))
    wrapper = build_wrapper(request, stdbuf=None, print_pid=True)
    res = subprocess.run(["/bin/sh", "-c", wrapper.text], capture_output=True, timeout=10)
    pid_line, out = res.stdout.split(b"\n", 1)
    assert parse_pid_line(pid_line)[1] is True and out.startswith(b"j1 1 LL ")  # set by the stdbuf process
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(Path("/bin/sh").resolve(), bin_dir / "sh")
    res = subprocess.run([str(bin_dir / "sh"), "-c", wrapper.text], capture_output=True, timeout=10, env={"PATH": str(bin_dir)})
    pid_line, out = res.stdout.split(b"\n", 1)
    assert parse_pid_line(pid_line)[1] is False and out == b"j1   \n"


def test_a_known_libstdbuf_is_preloaded_without_stdbufs_exec_and_line_buffers_a_pipe(tmp_path):
    """grep block-buffers a pipe: its first match reaches us while its input is still open only if it is line-buffered."""
    fifo = tmp_path / "in"
    os.mkfifo(fifo)
    for command in (f"grep a {fifo}", f"grep a < {fifo}"):  # plain words (run by the wrapper shell), and shell text
        wrapper = build_wrapper(ExecRequest(command=command), stdbuf=LIBSTDBUF, print_pid=False)
        assert "stdbuf -oL" not in wrapper.text
        proc = subprocess.Popen(["/bin/bash", "-c", wrapper.text], stdout=subprocess.PIPE)
        try:
            with open(fifo, "w") as feed:
                feed.write("a1\nb\n")
                feed.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 5)
                assert ready, f"{command}: no line while grep's input is open (block-buffered)"
                assert os.read(proc.stdout.fileno(), 100) == b"a1\n"
        finally:
            proc.kill()
            proc.wait(5)


def test_a_program_with_plain_words_is_execd_without_a_second_shell_and_shell_text_gets_one():
    assert plain_words("uptime") and plain_words("systemctl restart nginx.service") and plain_words("ls -la /tmp a=b 50%")
    for text in (
        "-n x",
        "a=b cmd",
        "echo $HOME",
        "a; b",
        "a | b",
        "echo 'x'",
        "ls *",
        "ls ~",
        "if",
        "for x in a",
        "a\tb",
        "a\nb",
        "ls {a,b}",
        "",
    ):
        assert not plain_words(text), text
    for builtin in ("exit 3", "cd /tmp", "export A", "echo hi", "kill -9 1", "true", ". ./x", "source x"):
        assert not plain_words(builtin), builtin  # its shell runs it: exec would not find it, or find another program
    wrapper = build_wrapper(ExecRequest(command="cat", args=["/proc/self/stat"]), stdbuf=False, print_pid=True)
    assert wrapper.text.endswith("; exec cat /proc/self/stat </dev/null") and "-c" not in wrapper.text
    for shell in ("/bin/sh", "/bin/bash"):
        res = subprocess.run([shell, "-c", wrapper.text], capture_output=True, timeout=10)
        pid_line, stat = res.stdout.split(b"\n", 1)
        assert parse_pid_line(pid_line)[0] == int(stat.split()[0])  # the job's process is the wrapper's
    assert run_wrapper(ExecRequest(command="exit", args="3")).returncode == 3
    res = run_wrapper(ExecRequest(command="no-such-command-here"))
    assert res.returncode == 127 and b"not found" in res.stderr


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_shell_text_for_the_login_shell_runs_in_the_wrappers_own_shell_unless_it_exports_values(shell):
    """sshd runs the wrapper with the login shell (``$SHELL -c``): shell text is evaluated there, not by a second
    shell; a job with env values gets the second shell, so ``ps`` stops showing the wrapper (and the values) at once."""

    def run(text: str, stdbuf: base.Buffering = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        request = ExecRequest(command=text, env={base.JOB_ID_ENV: "job-1", **(env or {})})
        wrapper = build_wrapper(request, stdbuf=stdbuf, print_pid=True)
        return subprocess.run([shell, "-c", wrapper.text], capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin", "SHELL": shell})

    probe = "echo $$ \"$REMORA_JOB_ID\" \"$JOBVAR\"; tr '\\0' ' ' < /proc/$$/cmdline; echo; wc -c; exit 3"
    for stdbuf in (False, None, LIBSTDBUF):
        for env in ({}, {"JOBVAR": "s3cret-value"}):
            res = run(probe, stdbuf, env)
            pid_line, mine, cmdline, stdin_bytes = res.stdout.decode().splitlines()
            assert res.returncode == 3, res.stderr
            assert mine.split(" ", 1) == [
                str(parse_pid_line(pid_line.encode())[0]),
                f"job-1 {env.get('JOBVAR', '')}",
            ]  # the wrapper's process
            assert stdin_bytes.strip() == "0"  # stdin is /dev/null
            if env:
                assert "s3cret-value" not in cmdline and "remora-pid" not in cmdline, cmdline  # a second shell replaced the wrapper
            else:
                assert "remora-pid" in cmdline, cmdline  # the wrapper's own shell ran the text: no second shell
    assert "eval" not in build_wrapper(ExecRequest(command="a; b"), stdbuf=True, print_pid=True).text  # stdbuf's exec needs a program
    res = run("-n x")  # not an option of eval: a command, as under $SHELL -c
    assert res.returncode == 127 and b"not found" in res.stderr
    assert run("if then fi").returncode == 2  # a syntax error
    assert run("false && true").returncode == 1


def test_pid_lines():
    assert parse_pid_line(b"remora-pid:42") == (42, None)
    assert parse_pid_line(b"remora-pid:42:1") == (42, True)
    assert parse_pid_line(b"remora-pid:42:0") == (42, False)
    assert parse_pid_line(b"remora-pid:42:/usr/libexec/coreutils/libstdbuf.so") == (42, "/usr/libexec/coreutils/libstdbuf.so")
    for line in (b"remora-pid:", b"remora-pid:x", b"remora-pid:42:2", b"remora-pid:42:/tmp/evil.so", b"hello"):
        assert parse_pid_line(line) == (None, None)
