"""Prometheus metrics of the API: HTTP requests by route and code, jobs by status, queue depth, job durations, workers.

The exposition is written by ``prometheus_client`` (escaping, HELP/TYPE,
number formats) from collectors on a registry of this app's own (never the
process-wide default one, so several apps in one process stay apart).
Counters (HTTP) are per API process; the job and queue families are read from
the shared database (``remora.services.queries``) and the queue at scrape
time, so every API instance reports the same values (aggregate them with
``max``, not ``sum``).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from remora import procstats
from remora.services import queries

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RECENT_WINDOW = 900.0  # seconds: remora_jobs_finished_recent counts jobs that finished this recently


class _HttpCollector:
    """Requests counted in memory by ``observe`` (per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, list[float]] = {}  # per route: cumulative bucket counts, then count, then sum
        self.auth_failures = 0
        self.auth_limited = 0

    def auth_failed(self, limited: bool) -> None:
        with self._lock:
            self.auth_failures += 1
            self.auth_limited += int(limited)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1
            buckets = self._latency.setdefault(route, [0.0] * (len(HTTP_BUCKETS) + 2))
            for i, bound in enumerate(HTTP_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            buckets[-2] += 1
            buckets[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            requests = dict(self._requests)
            latency = {k: list(v) for k, v in self._latency.items()}
        total = CounterMetricFamily(
            "remora_http_requests", "HTTP requests by route, method and status code.", labels=["route", "method", "code"]
        )
        for (route, method, status), count in sorted(requests.items()):
            total.add_metric([route, method, str(status)], count)
        yield total
        duration = HistogramMetricFamily("remora_http_request_duration_seconds", "Time to answer a request.", labels=["route"])
        for route, values in sorted(latency.items()):
            buckets = [(str(bound), values[i]) for i, bound in enumerate(HTTP_BUCKETS)] + [("+Inf", values[-2])]
            duration.add_metric([route], buckets, values[-1])
        yield duration
        yield CounterMetricFamily(
            "remora_api_auth_failures",
            "Requests whose credentials were refused (malformed header, unknown, revoked or expired token).",
            value=self.auth_failures,
        )
        yield CounterMetricFamily(
            "remora_api_auth_limited", "Failed authentications answered 429 (api.auth_failures_per_second).", value=self.auth_limited
        )


class _JobCollector:
    """Jobs by status, finished jobs' run times and recent outcomes, read from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("remora_jobs", "Jobs in the database by status.", labels=["status"])
        for status, count in queries.counts_by_status().items():
            jobs.add_metric([status], count)
        yield jobs
        counts, total, count = queries.job_duration_buckets(JOB_BUCKETS)
        duration = HistogramMetricFamily("remora_job_duration_seconds", "Run time of finished jobs.")
        duration.add_metric([], [(str(bound), value) for bound, value in zip(JOB_BUCKETS, counts, strict=True)] + [("+Inf", count)], total)
        yield duration
        recent = GaugeMetricFamily(
            "remora_jobs_finished_recent", f"Jobs that finished in the last {int(RECENT_WINDOW)} s, by status.", labels=["status"]
        )
        for status, value in queries.finished_recently(RECENT_WINDOW).items():
            recent.add_metric([status], value)
        yield recent


def _queue_families(stats: dict[str, Any] | None) -> Iterator[Metric]:
    """What the queue said at this scrape (only ``remora_queue_up`` 0 when it did not answer)."""
    yield GaugeMetricFamily("remora_queue_up", "1 when the queue answered this scrape.", value=1 if stats is not None else 0)
    if stats is None:
        return
    yield GaugeMetricFamily("remora_queue_depth", "Jobs waiting in the queue.", value=_num(stats.get("queue_depth")))
    yield GaugeMetricFamily("remora_queue_active_workers", "Workers with a recent heartbeat.", value=_num(stats.get("active_workers")))
    depth = GaugeMetricFamily("remora_queue_priority_depth", "Waiting jobs by priority.", labels=["priority"])
    for priority, count in sorted((stats.get("priority_distribution") or {}).items(), key=lambda kv: int(kv[0])):
        depth.add_metric([str(priority)], _num(count))
    yield depth


def _worker_families(workers: list[dict[str, Any]] | None) -> Iterator[Metric]:
    """Per-worker heartbeat age and running jobs, as the queue reports them (nothing when it is down)."""
    if workers is None:
        return
    active = sum(1 for w in workers if w.get("active", (w.get("heartbeat_age") or 0) < 30))
    yield GaugeMetricFamily("remora_workers_active", "Workers heard from within the last 30 s.", value=active)
    age = GaugeMetricFamily("remora_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat.", labels=["worker", "host"])
    running = GaugeMetricFamily("remora_worker_running_jobs", "Jobs each worker holds a lease on.", labels=["worker"])
    for w in workers:
        age.add_metric([str(w.get("id", "")), str(w.get("host", ""))], _num(w.get("heartbeat_age")))
        running.add_metric([str(w.get("id", ""))], len(w.get("jobs") or []))
    yield age
    yield running
    yield from _resource_families(
        "remora_worker", "each worker process (its last heartbeat)", [(w, [str(w.get("id", "")), str(w.get("host", ""))]) for w in workers]
    )


RESOURCES = (  # (key, metric suffix, help)
    ("cpu_seconds", "cpu_seconds", "CPU seconds (user + system) used by"),
    ("rss_bytes", "resident_memory_bytes", "Resident memory of"),
    ("threads", "threads", "Threads of"),
    ("open_files", "open_files", "Open file descriptors of"),
    ("ssh_connections", "ssh_connections", "Pooled SSH connections of"),
)


def _resource_families(prefix: str, what: str, rows: list[tuple[dict[str, Any], list[str]]]) -> Iterator[Metric]:
    """Per-process resource gauges (``<prefix>_cpu_seconds`` ...) labelled worker/host; rows without figures are left out."""
    labels = ["worker", "host"] if prefix == "remora_worker" else []
    for key, suffix, text in RESOURCES:
        family = GaugeMetricFamily(f"{prefix}_{suffix}", f"{text} {what}.", labels=labels)
        seen = False
        for row, values in rows:
            figures = row.get("resources") if prefix == "remora_worker" else row
            if figures and key in figures:
                family.add_metric(values, _num(figures[key]))
                seen = True
        if seen:
            yield family


def _process_families(stats: dict[str, Any] | None) -> Iterator[Metric]:
    """The API process's own figures, and the queue server's (from its STATS) when it answered."""
    yield from _resource_families("remora_api_process", "this API process", [(procstats.sample(), [])])
    if stats is not None and isinstance(stats.get("process"), dict):
        yield from _resource_families("remora_queue_process", "the queue server process", [(stats["process"], [])])


class _Scrape:
    """One scrape: the registry's collectors, then the queue's answer of this scrape."""

    def __init__(self, registry: CollectorRegistry, stats: dict[str, Any] | None, workers: list[dict[str, Any]] | None) -> None:
        self.registry, self.stats, self.workers = registry, stats, workers

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from _queue_families(self.stats)
        yield from _worker_families(self.workers)
        yield from _process_families(self.stats)


class Metrics:
    """The app's metrics: ``observe`` each request, ``render`` the text exposition for a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._http = _HttpCollector()
        self.registry.register(self._http)
        self.registry.register(_JobCollector())

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._http.observe(route, method, status, seconds)

    def auth_failed(self, limited: bool) -> None:
        self._http.auth_failed(limited)

    def render(self, queue_stats: dict[str, Any] | None, workers: list[dict[str, Any]] | None = None) -> str:
        """The exposition; ``queue_stats`` and ``workers`` are the queue's answers (None when it is down)."""
        return generate_latest(_Scrape(self.registry, queue_stats, workers)).decode("utf-8")  # type: ignore[arg-type]


def _num(value: Any) -> float | int:
    try:
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value or 0)
    except (TypeError, ValueError):
        return 0
