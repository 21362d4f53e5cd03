"""A queue server's unauthenticated connections: their deadlines, and the cap on how many are held.

Before authentication (until HELLO/AUTH presents the token; without a token,
until the first request) a connection is cheap to hold and cannot grow: the
server lets it send ``PREAUTH_REQUESTS`` requests of at most
``MAX_PREAUTH_FRAME`` bytes (checked per frame in the server's reader), this
gate closes it ``auth_timeout`` seconds after it connected, and at most
``max_unauthenticated`` such connections exist at once (a new one closes the
oldest), so they never fill ``max_connections``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remora.netqueue.replies import ClientConn

log = logging.getLogger("remora.netqueue.server")

PREAUTH_REQUESTS = 8  # requests a connection may send before it authenticates
MAX_UNAUTHENTICATED = 256  # unauthenticated connections held at once (a new one closes the oldest)


class PreauthGate:
    """Unauthenticated connections -> the deadline to authenticate by (monotonic), oldest first."""

    __slots__ = ("_evict_logged", "auth_timeout", "close", "closed", "deadlines", "limit")

    def __init__(self, auth_timeout: float, limit: int, close: Callable[[ClientConn], None]) -> None:
        self.auth_timeout = auth_timeout
        self.limit = max(1, limit)
        self.close = close
        self.closed = 0  # connections closed unauthenticated (timed out or evicted)
        self.deadlines: dict[ClientConn, float] = {}
        self._evict_logged = -1e9

    def __len__(self) -> int:
        return len(self.deadlines)

    def enter(self, conn: ClientConn) -> None:
        """A new connection: it must authenticate within ``auth_timeout``; the oldest one goes when the cap is reached."""
        conn.preauth = PREAUTH_REQUESTS
        deadlines = self.deadlines
        now = time.monotonic()
        if len(deadlines) >= self.limit:
            oldest = next(iter(deadlines))
            self.closed += 1
            if now >= self._evict_logged + 10:  # at most one line per 10 s under a flood
                self._evict_logged = now
                log.warning("queue: %d unauthenticated connections: closing the oldest (%s)", len(deadlines), oldest.peer)
            self.close(oldest)
        deadlines[conn] = now + self.auth_timeout

    def admit(self, conn: ClientConn) -> None:
        """The connection authenticated (or, without a token, sent its first request): no pre-auth limits."""
        conn.preauth = 0
        self.deadlines.pop(conn, None)

    def drop(self, conn: ClientConn) -> None:
        self.deadlines.pop(conn, None)

    def next_deadline(self) -> float:
        """The oldest connection's deadline (monotonic); call only while some are held."""
        return next(iter(self.deadlines.values()))

    def expire(self) -> None:
        """Close connections that did not authenticate within ``auth_timeout``."""
        now = time.monotonic()
        deadlines = self.deadlines
        while deadlines:
            conn, deadline = next(iter(deadlines.items()))
            if deadline > now:
                return
            log.debug("queue: closing %s: not authenticated within %gs", conn.peer, self.auth_timeout)
            self.closed += 1
            self.close(conn)
            deadlines.pop(conn, None)  # close() drops it; this ends the loop even if it did not
