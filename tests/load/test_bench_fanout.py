"""scripts/bench_fanout.py as a smoke run: a 20-host loopback fleet, Remora (API and CLI) and fabric, cold and warm.

Proves the benchmark runs end to end in well under a minute and prints the
JSON it promises: a median and every run per (N, command, temperature, tool), CPU seconds,
a skipped peer named with the reason, the ratios, and Remora's results all
stored (the script checks every host's output of every Remora run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import find_binary, missing

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_fanout.py"


def test_quick_fanout_bench_prints_medians_ratios_and_stores_every_result():
    if not find_binary("sshd", ["/usr/sbin"]):
        missing("OpenSSH sshd (Debian package openssh-server)")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--peers", "fabric", "--command", "uptime"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    assert data["sizes"] == [20] and data["runs"] == 1 and data["commands"] == ["uptime"]
    assert data["remora_results_complete"] is True
    assert data["concurrent"] is None  # --quick leaves out the long --concurrent run
    assert data["wait"] in ("events", "poll")
    start = data["cli_start_s"]  # a CLI command's round trip includes starting the interpreter
    assert set(start) == {"python", "remora_round_trip"} and 0 < start["python"] < start["remora_round_trip"], start
    for temperature in ("cold", "warm"):
        cell = data["results"]["20"]["uptime"][temperature]
        for tool in ("remora_api", "remora_cli"):
            assert cell[tool]["median_s"] > 0 and len(cell[tool]["runs_s"]) == 1, cell
            # its own CPU (remora up and the CLI; 10 ms ticks) is a part of the whole machine's
            assert 0 < cell[tool]["tool_cpu_s"] <= cell[tool]["machine_cpu_s"] + 0.05, cell
        fabric = cell["fabric"]
        assert ("median_s" in fabric and fabric["median_s"] > 0) or "not installed" in fabric["skipped"], fabric
        assert set(cell) <= {"remora_api", "remora_cli", "fabric"}  # peers not asked for are not run
        ratios = data["ratios"]["20"]["uptime"][temperature]
        assert set(ratios) == {"remora_api_vs_best_peer", "remora_cli_vs_best_peer", "ansible_vs_remora_api"}
        if "median_s" in fabric:
            assert ratios["remora_api_vs_best_peer"] == round(cell["remora_api"]["median_s"] / fabric["median_s"], 2)
        assert ratios["ansible_vs_remora_api"] is None


def test_unknown_peer_is_a_usage_error_before_anything_starts():
    res = subprocess.run([sys.executable, str(SCRIPT), "--peers", "fabric,chef"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "unknown peers: chef" in res.stderr
