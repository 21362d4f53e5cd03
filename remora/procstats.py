"""This process's resource usage from ``/proc/self``: CPU seconds, resident memory, threads, open files.

Imports nothing of Remora's, so the queue, the worker and the API can each report their own
figures (worker heartbeats, ``/stats``, ``/metrics``).  Off Linux (no ``/proc``) every figure is 0.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
FIELDS = ("cpu_seconds", "rss_bytes", "threads", "open_files")


def sample(pid: str = "self") -> dict[str, float]:
    """``cpu_seconds`` (user + system), ``rss_bytes``, ``threads``, ``open_files`` of a process (default: this one)."""
    out: dict[str, float] = dict.fromkeys(FIELDS, 0)
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
        out["cpu_seconds"] = round((int(fields[11]) + int(fields[12])) / _TICKS, 3)  # utime, stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"{base}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_bytes"] = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        out["open_files"] = len(os.listdir(f"{base}/fd"))
    except OSError:
        pass
    return out
