"""Prometheus text exposition: HTTP requests by route and code, jobs by status, queue depth, job durations, workers.

Counters (HTTP) are per API process; the job and queue families are read from
the shared database and queue at scrape time, so every API instance reports
the same values (aggregate them with ``max``, not ``sum``).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from remora import models
from remora.models import Job, JobStatus

log = logging.getLogger(__name__)

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RECENT_WINDOW = 900.0  # seconds: remora_jobs_finished_recent counts jobs that finished this recently


def _labels(**labels: Any) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels.items())
    return "{" + inner + "}"


class Metrics:
    """Counters kept in memory by the app; gauges read from the database at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, list[float]] = {}
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
            buckets[-2] += 1  # count
            buckets[-1] += seconds  # sum

    def render(self, queue_stats: dict[str, Any] | None, workers: list[dict[str, Any]] | None = None) -> str:
        lines: list[str] = []
        lines += [
            "# HELP remora_http_requests_total HTTP requests by route, method and status code.",
            "# TYPE remora_http_requests_total counter",
        ]
        with self._lock:
            requests = dict(self._requests)
            latency = {k: list(v) for k, v in self._latency.items()}
        for (route, method, status), count in sorted(requests.items()):
            lines.append(f"remora_http_requests_total{_labels(route=route, method=method, code=status)} {count}")
        lines += [
            "# HELP remora_http_request_duration_seconds Time to answer a request.",
            "# TYPE remora_http_request_duration_seconds histogram",
        ]
        for route, values in sorted(latency.items()):
            for bound, count in zip(HTTP_BUCKETS, values, strict=False):
                lines.append(f"remora_http_request_duration_seconds_bucket{_labels(route=route, le=bound)} {int(count)}")
            lines.append(f"remora_http_request_duration_seconds_bucket{_labels(route=route, le='+Inf')} {int(values[-2])}")
            lines.append(f"remora_http_request_duration_seconds_count{_labels(route=route)} {int(values[-2])}")
            lines.append(f"remora_http_request_duration_seconds_sum{_labels(route=route)} {values[-1]:.6f}")
        lines += [
            "# HELP remora_api_auth_failures_total Requests whose credentials were refused (malformed header, unknown, revoked or expired token).",
            "# TYPE remora_api_auth_failures_total counter",
            f"remora_api_auth_failures_total {self.auth_failures}",
            "# HELP remora_api_auth_limited_total Failed authentications answered 429 (api.auth_failures_per_second).",
            "# TYPE remora_api_auth_limited_total counter",
            f"remora_api_auth_limited_total {self.auth_limited}",
        ]
        lines += self._jobs()
        lines += self._queue(queue_stats)
        lines += _workers(workers)
        return "\n".join(lines) + "\n"

    def _jobs(self) -> list[str]:
        from remora.services.queries import counts_by_status

        lines = ["# HELP remora_jobs Jobs in the database by status.", "# TYPE remora_jobs gauge"]
        for status, count in counts_by_status().items():
            lines.append(f"remora_jobs{_labels(status=status)} {count}")
        lines += ["# HELP remora_job_duration_seconds Run time of finished jobs.", "# TYPE remora_job_duration_seconds histogram"]
        counts, total, count = job_duration_buckets()
        for bound, value in zip(JOB_BUCKETS, counts, strict=True):
            lines.append(f"remora_job_duration_seconds_bucket{_labels(le=bound)} {value}")
        lines.append(f"remora_job_duration_seconds_bucket{_labels(le='+Inf')} {count}")
        lines.append(f"remora_job_duration_seconds_sum {total:.6f}")
        lines.append(f"remora_job_duration_seconds_count {count}")
        lines += [
            f"# HELP remora_jobs_finished_recent Jobs that finished in the last {int(RECENT_WINDOW)} s, by status.",
            "# TYPE remora_jobs_finished_recent gauge",
        ]
        for status, value in finished_recently(RECENT_WINDOW).items():
            lines.append(f"remora_jobs_finished_recent{_labels(status=status)} {value}")
        return lines

    def _queue(self, stats: dict[str, Any] | None) -> list[str]:
        lines = ["# HELP remora_queue_up 1 when the queue answered this scrape.", "# TYPE remora_queue_up gauge"]
        lines.append(f"remora_queue_up {1 if stats is not None else 0}")
        if stats is None:
            return lines
        lines += ["# HELP remora_queue_depth Jobs waiting in the queue.", "# TYPE remora_queue_depth gauge"]
        lines.append(f"remora_queue_depth {_num(stats.get('queue_depth'))}")
        lines += ["# HELP remora_queue_active_workers Workers with a recent heartbeat.", "# TYPE remora_queue_active_workers gauge"]
        lines.append(f"remora_queue_active_workers {_num(stats.get('active_workers'))}")
        lines += ["# HELP remora_queue_priority_depth Waiting jobs by priority.", "# TYPE remora_queue_priority_depth gauge"]
        for priority, count in sorted((stats.get("priority_distribution") or {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"remora_queue_priority_depth{_labels(priority=priority)} {_num(count)}")
        return lines


def _workers(workers: list[dict[str, Any]] | None) -> list[str]:
    """Per-worker heartbeat age and running jobs, as the queue reports them (nothing when it is down)."""
    if workers is None:
        return []
    lines = ["# HELP remora_workers_active Workers heard from within the last 30 s.", "# TYPE remora_workers_active gauge"]
    lines.append(f"remora_workers_active {sum(1 for w in workers if w.get('active', (w.get('heartbeat_age') or 0) < 30))}")
    lines += [
        "# HELP remora_worker_heartbeat_age_seconds Seconds since each worker's last heartbeat.",
        "# TYPE remora_worker_heartbeat_age_seconds gauge",
    ]
    for w in workers:
        lines.append(
            f"remora_worker_heartbeat_age_seconds{_labels(worker=w.get('id', ''), host=w.get('host', ''))} {_num(w.get('heartbeat_age'))}"
        )
    lines += ["# HELP remora_worker_running_jobs Jobs each worker holds a lease on.", "# TYPE remora_worker_running_jobs gauge"]
    for w in workers:
        lines.append(f"remora_worker_running_jobs{_labels(worker=w.get('id', ''))} {len(w.get('jobs') or [])}")
    return lines


def finished_recently(window: float) -> dict[str, int]:
    """Jobs per finished status whose ``finished_at`` lies within the last ``window`` seconds (zeros included)."""
    import datetime as dt

    cutoff = models.utcnow() - dt.timedelta(seconds=window)
    finished = [s.value for s in JobStatus if s.finished]
    counts = dict.fromkeys(finished, 0)
    query = (
        Job.select(Job.status, models.fn.COUNT(Job.id))
        .where(Job.status.in_(finished), Job.updated_at >= cutoff, Job.finished_at >= cutoff)
        .group_by(Job.status)
        .tuples()
    )
    for status, count in query:
        counts[status] = int(count)
    return counts


def _num(value: Any) -> float | int:
    try:
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value or 0)
    except (TypeError, ValueError):
        return 0


def _duration_expr() -> Any:
    if models.is_postgres():
        return models.fn.date_part("epoch", Job.finished_at - Job.started_at)
    return (models.fn.julianday(Job.finished_at) - models.fn.julianday(Job.started_at)) * 86400.0


def job_duration_buckets() -> tuple[list[int], float, int]:
    """(cumulative counts per JOB_BUCKETS bound, sum, count) over finished jobs, in one query."""
    duration = _duration_expr()
    columns = [models.fn.SUM(models.Case(None, [(duration <= bound, 1)], 0)) for bound in JOB_BUCKETS]
    columns += [models.fn.SUM(duration), models.fn.COUNT(Job.id)]
    finished = [s.value for s in JobStatus if s.finished]
    row = (
        Job.select(*columns).where(Job.status.in_(finished), Job.started_at.is_null(False), Job.finished_at.is_null(False)).tuples().first()
    )
    if not row:
        return [0] * len(JOB_BUCKETS), 0.0, 0
    counts = [int(v or 0) for v in row[: len(JOB_BUCKETS)]]
    return counts, float(row[-2] or 0.0), int(row[-1] or 0)
