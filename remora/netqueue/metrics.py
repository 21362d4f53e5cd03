"""Prometheus text exposition (format 0.0.4) of a queue server's state, for ``GET /metrics`` on its port.

Pure: turns the dicts ``QueueServer.stats()`` and ``engine.worker_list()``
already return into text, so a scrape costs what a ``/stats`` request costs.
Every name starts with ``netqueue_``; docs/alerts.yml uses them.
"""

from __future__ import annotations

from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("ready", "delayed", "reserved", "dead")


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return "0"


class Exposition:
    """Collects families (HELP, TYPE, samples) in order and renders them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, doc: str, samples: list[tuple[dict[str, Any], Any]]) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def one(self, name: str, kind: str, doc: str, value: Any) -> None:
        self.family(name, kind, doc, [({}, value)])

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(stats: dict[str, Any], workers: list[dict[str, Any]]) -> str:
    """The exposition for one scrape: depth, states, priorities, workers, totals, WAL and server counters."""
    out = Exposition()
    out.one("netqueue_up", "gauge", "1 while the queue server answers.", 1)
    out.one("netqueue_uptime_seconds", "gauge", "Seconds since the server started.", stats.get("uptime", 0))
    out.one("netqueue_depth", "gauge", "Jobs waiting (ready + delayed) in every queue.", stats.get("queue_depth", 0))
    queues = stats.get("queues") or {}
    out.family(
        "netqueue_jobs",
        "gauge",
        "Jobs by queue and state (ready, delayed, reserved, dead).",
        [({"queue": name, "state": state}, counts.get(state, 0)) for name, counts in queues.items() for state in STATES],
    )
    out.family(
        "netqueue_priority_depth",
        "gauge",
        "Waiting jobs by priority (1 highest .. 10 lowest).",
        [({"priority": p}, n) for p, n in sorted((stats.get("priority_distribution") or {}).items(), key=lambda kv: int(kv[0]))],
    )
    out.one("netqueue_dead_letters", "gauge", "Jobs in the dead-letter queue.", stats.get("dead", 0))
    out.one("netqueue_processing_rate", "gauge", "Jobs acknowledged per second (recent window).", stats.get("processing_rate", 0))
    out.one(
        "netqueue_average_wait_seconds", "gauge", "Mean time from ready to reserved (recent window).", stats.get("average_wait_time", 0)
    )
    out.family(
        "netqueue_events_total",
        "counter",
        "Job events since the server started (put, reserved, acked, nacked, expired, dead_lettered, canceled, kicked, purged).",
        [({"event": k}, v) for k, v in sorted((stats.get("totals") or {}).items())],
    )
    _workers(out, stats, workers)
    _server(out, stats)
    return out.render()


def _workers(out: Exposition, stats: dict[str, Any], workers: list[dict[str, Any]]) -> None:
    out.one("netqueue_active_workers", "gauge", "Workers heard from within the last 30 s.", stats.get("active_workers", 0))
    out.family(
        "netqueue_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since each worker's last heartbeat (TOUCH or RESERVE).",
        [({"worker": w["id"], "host": w.get("host", "")}, w.get("heartbeat_age", 0)) for w in workers],
    )
    out.family(
        "netqueue_worker_jobs_held",
        "gauge",
        "Jobs each worker holds a lease on.",
        [({"worker": w["id"]}, len(w.get("jobs") or [])) for w in workers],
    )
    out.family(
        "netqueue_worker_concurrency",
        "gauge",
        "Threads each worker announced.",
        [({"worker": w["id"]}, w.get("concurrency", 0)) for w in workers],
    )
    for key, suffix, doc in WORKER_RESOURCES:
        out.family(
            f"netqueue_worker_{suffix}",
            "gauge",
            doc,
            [({"worker": w["id"], "host": w.get("host", "")}, w["resources"][key]) for w in workers if w.get("resources")],
        )
    for key, doc in (("done", "acknowledged"), ("failed", "given up (lease expired)")):
        out.family(
            f"netqueue_worker_jobs_{key}_total",
            "counter",
            f"Jobs each worker {doc} since the server started.",
            [({"worker": w["id"]}, w.get(key, 0)) for w in workers],
        )


WORKER_RESOURCES = (  # (REGISTER figure, metric suffix, help)
    ("cpu_seconds", "cpu_seconds", "CPU seconds (user + system) each worker process used, as of its last heartbeat."),
    ("rss_bytes", "resident_memory_bytes", "Resident memory of each worker process, as of its last heartbeat."),
    ("threads", "threads", "Threads of each worker process, as of its last heartbeat."),
    ("open_files", "open_files", "Open file descriptors of each worker process, as of its last heartbeat."),
    ("ssh_connections", "ssh_connections", "Pooled SSH connections of each worker, as of its last heartbeat."),
)


def _server(out: Exposition, stats: dict[str, Any]) -> None:
    server = stats.get("server") or {}
    process = stats.get("process") or {}
    for key, suffix, _ in WORKER_RESOURCES[:4]:
        if key in process:
            out.one(f"netqueue_process_{suffix}", "gauge", f"The queue server process's {key.replace('_', ' ')}.", process[key])
    if "monitor_streams" in server:
        out.one("netqueue_monitor_streams", "gauge", "Live /monitor streams (Server-Sent Events).", server["monitor_streams"])
    out.one("netqueue_connections", "gauge", "Open client connections.", stats.get("connections", 0))
    for key, doc in (
        ("connections_total", "Client connections accepted."),
        ("requests", "Binary protocol requests handled."),
        ("errors", "Requests answered with an error."),
        ("http_requests", "HTTP requests answered on the queue port."),
        ("spin_hits", "Waits whose busy-poll found the next request without sleeping (queue.busy_poll)."),
        ("spin_misses", "Busy-polls that ran out of window and slept (CPU spent for nothing)."),
        ("spin_late", "Busy-polls that found the next request only late in the window (backed off like misses)."),
    ):
        if key in server:
            name = key if key.endswith("_total") else f"{key}_total"
            out.one(f"netqueue_{name}", "counter", doc, server[key])
    wal = stats.get("wal")
    if wal:
        out.one("netqueue_wal_bytes", "gauge", "Size of the current log file.", wal.get("log_bytes", 0))
        out.one("netqueue_wal_generation", "gauge", "Snapshot generation of the log.", wal.get("generation", 0))
        out.one("netqueue_wal_fsyncs_total", "counter", "fsync calls on the log.", wal.get("fsyncs", 0))
        out.one("netqueue_wal_compactions_total", "counter", "Snapshots written (compactions).", wal.get("compactions", 0))
