"""Live ``/monitor`` streams (Server-Sent Events) of a queue server: which connections stream, when each is due.

``GET /monitor`` with ``Accept: text/event-stream`` (``remora.netqueue.http``)
keeps its connection: the server's I/O loop calls ``push`` every iteration,
and every stream whose next event is due gets the same snapshot
(``http.monitor_event``, built once per push) every ``monitor_interval``
seconds.  A stream whose reader lags ``MAX_STREAM_BACKLOG`` bytes behind is
closed; when the server stops, every stream gets an ``end`` event and closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remora.netqueue.replies import ClientConn
    from remora.netqueue.server import QueueServer

log = logging.getLogger("remora.netqueue.server")

MAX_MONITOR_STREAMS = 16  # live /monitor streams (Server-Sent Events) at once
MONITOR_INTERVAL = 1.0  # seconds between two events of a /monitor stream
MAX_STREAM_BACKLOG = 256 * 1024  # a stream whose reader lags this many bytes behind is closed
END_EVENT = b'event: end\ndata: {"reason":"the queue server is stopping"}\n\n'


class MonitorStreams:
    """The server's live streams -> when their next event is due (monotonic seconds)."""

    __slots__ = ("close", "due", "server")

    def __init__(self, server: QueueServer, close: Callable[[ClientConn], None]) -> None:
        self.server = server
        self.close = close
        self.due: dict[ClientConn, float] = {}

    def __len__(self) -> int:
        return len(self.due)

    def __contains__(self, conn: object) -> bool:
        return conn in self.due

    def add(self, conn: ClientConn) -> None:
        """A new stream: its first event goes out in this iteration of the loop."""
        self.due[conn] = time.monotonic()

    def drop(self, conn: ClientConn) -> None:
        self.due.pop(conn, None)

    def next_due(self) -> float:
        """When the earliest stream is due (monotonic); call only with streams open."""
        return min(self.due.values())

    def push(self) -> None:
        """Send the /monitor snapshot to every stream whose next event is due (one snapshot for all of them)."""
        from remora.netqueue.http import monitor_event

        server = self.server
        interval = server.settings.monitor_interval
        now = time.monotonic()
        event = b""
        for conn, due in list(self.due.items()):
            if due > now:
                continue
            if len(conn.out) > MAX_STREAM_BACKLOG:
                log.info("queue: closing the /monitor stream of %s: it does not read", conn.peer)
                self.close(conn)
                continue
            event = event or monitor_event(server)
            self.due[conn] = max(due + interval, now + interval / 2)
            server.replies.add(conn, event)

    def end_all(self) -> None:
        """The server stops: a last event says the stream ends; then each connection closes."""
        for conn in list(self.due):
            conn.closing = True
            self.server.replies.add(conn, END_EVENT)
        self.due.clear()
