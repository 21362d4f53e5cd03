"""Per-client limits of the API: concurrent output downloads and failed authentications.

Both are in memory, per process, keyed by the client's address (the
socket's peer: proxy headers are not trusted), and bounded in size.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from remora.errors import RemoraError, Unavailable


class TooManyRequests(RemoraError):
    """A client exceeded a per-address limit; retry after ``retry_after`` seconds."""

    code = "TOO_MANY_REQUESTS"
    status = 429

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class StreamSlots:
    """How many large bodies (raw job output) are sent at once: ``total`` overall, ``per_client`` per address.

    A download holds a request thread while its client reads; the caps keep
    threads free for every other request however many downloads are asked for.
    """

    def __init__(self, total: int, per_client: int, what: str = "output downloads") -> None:
        self.what = what
        self.total = max(1, total)
        self.per_client = max(1, per_client)
        self._lock = threading.Lock()
        self._busy = 0
        self._by_client: dict[str, int] = {}

    def acquire(self, client: str) -> None:
        with self._lock:
            if self._by_client.get(client, 0) >= self.per_client:
                raise TooManyRequests(f"at most {self.per_client} {self.what} at once per client address", retry_after=2)
            if self._busy >= self.total:
                raise Unavailable(f"at most {self.total} {self.what} at once: try again shortly", retry_after=2)
            self._busy += 1
            self._by_client[client] = self._by_client.get(client, 0) + 1

    def release(self, client: str) -> None:
        with self._lock:
            self._busy = max(0, self._busy - 1)
            left = self._by_client.get(client, 0) - 1
            if left > 0:
                self._by_client[client] = left
            else:
                self._by_client.pop(client, None)

    @property
    def busy(self) -> int:
        return self._busy


class FailureLimiter:
    """A token bucket per client address for failed authentications.

    Each failure takes a token; ``rate`` tokens come back per second, up to
    ``burst``.  An address with no token left is refused (429) before its
    token is even looked at.  Only failures count: a good token is never
    limited.  At most ``max_clients`` addresses are remembered (the least
    recently seen are forgotten first).
    """

    def __init__(self, rate: float, burst: float | None = None, max_clients: int = 10000) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * self.rate))
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _level(self, client: str, now: float) -> float:
        tokens, stamp = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def retry_after(self, client: str) -> int | None:
        """Seconds to wait when ``client`` has no failure left to spend, else None."""
        if not self.enabled:
            return None
        now = time.monotonic()
        with self._lock:
            if client not in self._buckets:
                return None
            level = self._level(client, now)
        if level >= 1.0:
            return None
        return max(1, int((1.0 - level) / self.rate + 0.999))

    def failed(self, client: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            level = self._level(client, now)
            self._buckets[client] = (max(0.0, level - 1.0), now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
