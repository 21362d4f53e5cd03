"""``remora.procstats`` reads a process's figures from /proc: checked against a real child process and this one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from remora import procstats
from tests.support.waits import wait_for


def test_this_process_figures_follow_what_it_does():
    before = procstats.sample()
    assert set(before) == set(procstats.FIELDS)
    assert before["rss_bytes"] > 1_000_000 and before["threads"] >= 1 and before["open_files"] >= 3
    files = [open(os.devnull) for _ in range(10)]
    try:
        assert procstats.sample()["open_files"] >= before["open_files"] + 10
    finally:
        for f in files:
            f.close()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert procstats.sample()["cpu_seconds"] >= before["cpu_seconds"] + 0.2


def test_another_process_by_pid_and_a_missing_one():
    code = (
        "import threading, time; [threading.Thread(target=time.sleep, args=(30,), daemon=True).start() for _ in range(4)]; time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: procstats.sample(str(child.pid))["threads"] == 5, 10, 0.05, "the child's five threads")
        assert procstats.sample(str(child.pid))["rss_bytes"] > 1_000_000
    finally:
        child.kill()
        child.wait()
    assert procstats.sample(str(child.pid)) == dict.fromkeys(procstats.FIELDS, 0)
