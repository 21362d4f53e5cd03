"""What a queue server is told: ``ServeSettings``, each option once, and its mapping from Remora's settings.

``remora queue serve`` and ``python -m remora.netqueue`` build one from the
configuration (``ServeSettings.from_config``); tests and ``remora up`` pass
fields directly.  Invalid combinations (a non-loopback address without a
token, persistence without a data directory, an unknown fsync mode) raise
``ConfigError`` before anything listens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remora.errors import ConfigError
from remora.netaddr import is_loopback
from remora.netqueue.entries import WORKER_ACTIVE_WINDOW
from remora.netqueue.monitor import MAX_MONITOR_STREAMS, MONITOR_INTERVAL
from remora.netqueue.preauth import MAX_UNAUTHENTICATED

if TYPE_CHECKING:
    from remora.config import Settings


@dataclass(frozen=True)
class ServeSettings:
    """Everything a queue server is told, each option once; ``from_config`` maps Remora's settings onto it."""

    host: str = "127.0.0.1"
    port: int = 9000
    data_dir: Path | None = None
    persistence: bool = True
    fsync: str = "always"  # always (group commit) | interval | never
    fsync_interval: float = 0.01
    max_size: int = 100000  # most waiting jobs per queue
    token: str = ""  # "" serves without a token (loopback only)
    max_connections: int = 4096
    busy_poll: float = 0.0001
    auth_timeout: float = 5.0
    max_queues: int = 1000
    max_unauthenticated: int = MAX_UNAUTHENTICATED
    health_check_interval: float = WORKER_ACTIVE_WINDOW  # a worker silent longer than this counts as inactive
    max_monitor_streams: int = MAX_MONITOR_STREAMS  # live /monitor streams at once (more are refused with 503)
    monitor_interval: float = MONITOR_INTERVAL  # seconds between two events of a /monitor stream

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "interval", "never"):
            raise ConfigError(f"queue fsync = {self.fsync!r}: expected always, interval or never")
        if not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"queue bound to {self.host or '0.0.0.0'} (not loopback) needs a token: leave queue.token unset "
                "(a token file is made), or set REMORA_QUEUE_TOKEN / queue.token / queue.token_file"
            )
        if self.persistence and self.data_dir is None:
            raise ConfigError("queue persistence needs a data directory (queue.data_dir)")

    @classmethod
    def from_config(cls, settings: Settings, **overrides: Any) -> ServeSettings:
        """The server's settings from Remora's (``queue.*``); ``overrides`` that are not None win.

        Without a ``token`` override the token is ``settings.queue_token()`` (the caller decides
        whether a missing token file is made: pass ``token=settings.queue_token(create=True)``)."""
        from remora.config import split_addr

        host, port = split_addr(settings.queue.addr, 9000)
        q = settings.queue
        values: dict[str, Any] = {
            "host": host,
            "port": port,
            "data_dir": settings.queue_data_dir,
            "persistence": q.persistence,
            "fsync": q.fsync,
            "fsync_interval": q.fsync_interval,
            "max_size": q.max_size,
            "max_connections": q.max_connections,
            "busy_poll": q.busy_poll,
            "auth_timeout": q.auth_timeout,
            "max_queues": q.max_queues,
            "health_check_interval": q.health_check_interval,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "token" not in values:
            values["token"] = settings.queue_token()
        return cls(**values)
