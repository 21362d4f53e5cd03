"""What every use-case needs: settings, the queue client and the secret box."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remora.config import Settings
from remora.crypto import SecretBox
from remora.services.group_commit import GroupCommit

if TYPE_CHECKING:
    from remora.netqueue.client import QueueClient

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Settings plus the shared clients. ``queue`` may be None (no queue: jobs wait for the reconciler)."""

    settings: Settings
    queue: QueueClient | None = None
    put_failed: threading.Event = field(default_factory=threading.Event, repr=False)  # the reconciler sweeps soon
    group: GroupCommit = field(default_factory=GroupCommit, repr=False)  # concurrent submissions share a commit
    _secrets: SecretBox | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def secrets(self) -> SecretBox:
        with self._lock:
            if self._secrets is None:
                self._secrets = SecretBox.from_settings(self.settings)
            return self._secrets

    @property
    def queue_name(self) -> str:
        return self.settings.queue.name


def make_queue_client(settings: Settings, *, name: str = "api") -> Any:
    """A QueueClient for ``settings.queue.addr`` (created lazily by the caller when wanted)."""
    from remora.netqueue.client import QueueClient

    return QueueClient(settings.queue.addr, token=settings.queue_token, name=name, connect_timeout=2.0, retry_for=0.0)


class LazyQueue:
    """A QueueClient created on first use (and re-created after a failed creation).

    The API must start, and record jobs, while the queue is down; the real
    client is built the first time a call needs it.
    """

    def __init__(self, settings: Settings, *, name: str = "api") -> None:
        self._settings = settings
        self._name = name
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                from remora.errors import QueueUnavailable

                try:
                    self._client = make_queue_client(self._settings, name=self._name)
                except QueueUnavailable:
                    raise
                except (OSError, ConnectionError) as exc:
                    raise QueueUnavailable(f"queue at {self._settings.queue.addr} unavailable: {exc}") from None
            return self._client

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._get(), attr)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
