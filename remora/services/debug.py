"""The debug report (admin only): what a bug report needs, in one JSON document.

Version and build, the effective configuration with the source of each value
(secrets masked as ``remora config show`` masks them), the database (kind,
size, schema version, row counts), the queue (depth per priority,
connections, WAL size, fsync mode, from its STATS), the workers (from the
queue's worker registry), and the API's recent requests and errors (kept in
memory by the API process that answers).
"""

from __future__ import annotations

import os
import platform
import sys
from collections import deque
from pathlib import Path
from threading import Lock
from typing import Any

from remora import __version__, models
from remora.config import Settings

RECENT_REQUESTS = 200
RECENT_ERRORS = 50
NOT_REPORTED = "not reported by the worker"


class RequestLog:
    """The API's last ``RECENT_REQUESTS`` requests and last ``RECENT_ERRORS`` error answers (this process only)."""

    def __init__(self, size: int = RECENT_REQUESTS, errors: int = RECENT_ERRORS) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=size)
        self.errors: deque[dict[str, Any]] = deque(maxlen=errors)
        self._lock = Lock()

    def record(self, entry: dict[str, Any], error: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.requests.append(entry)
            if error is not None:
                self.errors.append({**entry, **error})

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(requests, errors), newest first."""
        with self._lock:
            return list(reversed(self.requests)), list(reversed(self.errors))


def _git_commit(root: Path) -> str | None:
    """The commit a checkout runs (a worktree too); None for a zipapp or an installed wheel."""
    try:
        git = root / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = Path(git.read_text().split(":", 1)[1].strip())
        ref = (git / "HEAD").read_text().strip()
        if not ref.startswith("ref: "):
            return ref or None
        name = ref[5:]
        common = git / (git / "commondir").read_text().strip() if (git / "commondir").is_file() else git
        for base in (git, common):
            if (base / name).is_file():
                return (base / name).read_text().strip()
        packed = common / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            if line.endswith(" " + name):
                return line.split()[0]
    except (OSError, IndexError):
        return None
    return None


def build_info() -> dict[str, Any]:
    return {
        "version": __version__,
        "commit": _git_commit(Path(__file__).resolve().parents[2]),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pid": os.getpid(),
    }


def config_report(settings: Settings) -> dict[str, Any]:
    """Every key: its masked value and where it came from."""
    from remora.config import mask

    keys = {dotted: {"value": mask(dotted, value), "source": settings.sources.get(dotted, "default")} for dotted, value in settings.items()}
    return {"config_file": settings.config_file, "dotenv_file": settings.dotenv_file, "keys": keys}


def database_report(settings: Settings) -> dict[str, Any]:
    postgres = models.is_postgres()
    out: dict[str, Any] = {"kind": "postgresql" if postgres else "sqlite"}
    try:
        if postgres:
            out["size_bytes"] = int(models.get_database().execute_sql("SELECT pg_database_size(current_database())").fetchone()[0])
        else:
            path = Path(str(models.get_database().database))
            out["size_bytes"] = sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())
    except (OSError, models.OperationalError, models.pw.DatabaseError) as exc:
        out["size_bytes"] = None
        out["size_error"] = str(exc)[:200]
    version = models.SchemaVersion.select(models.fn.MAX(models.SchemaVersion.version)).scalar()
    out["schema_version"] = int(version) if version is not None else None
    out["schema_version_expected"] = models.SCHEMA_VERSION
    out["rows"] = {model._meta.table_name: int(model.select().count()) for model in models.MODELS}
    return out


def queue_report(stats: dict[str, Any] | None) -> dict[str, Any]:
    if stats is None:
        return {"available": False}
    wal = stats.get("wal") or {}
    server = stats.get("server") or {}
    return {
        "available": True,
        "depth": stats.get("queue_depth"),
        "depth_per_priority": stats.get("priority_distribution") or {},
        "reserved": stats.get("reserved"),
        "dead": stats.get("dead"),
        "connections": stats.get("connections"),
        "wal_bytes": wal.get("log_bytes"),
        "persistence": server.get("persistence"),
        "fsync": server.get("fsync") or wal.get("fsync"),
        "uptime_seconds": stats.get("uptime"),
    }


def workers_report(workers: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Each worker's threads (its concurrency) and held jobs; pool connections are not in its registration."""
    if workers is None:
        return None
    return [
        {
            "id": w.get("id"),
            "host": w.get("host"),
            "threads": w.get("concurrency"),
            "held_jobs": list(w.get("jobs") or []),
            "heartbeat_age": w.get("heartbeat_age"),
            "active": w.get("active"),
            "pool_connections": w.get("pool_connections", NOT_REPORTED),
        }
        for w in workers
    ]


def report(
    settings: Settings, *, queue_stats: dict[str, Any] | None, workers: list[dict[str, Any]] | None, log: RequestLog
) -> dict[str, Any]:
    requests, errors = log.snapshot()
    return {
        "build": build_info(),
        "config": config_report(settings),
        "database": database_report(settings),
        "queue": queue_report(queue_stats),
        "workers": workers_report(workers),
        "requests": requests,
        "errors": errors,
        "generated_at": models.to_rfc3339(models.utcnow()),
    }
