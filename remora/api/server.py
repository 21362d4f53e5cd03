"""Serving the API: ``make_app`` (the WSGI callable) and ``APIServer`` (waitress in a thread + reconciler, maintenance, scheduler, webhook deliveries)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from remora.api.app import App
from remora.api.routes_files import UPLOAD_OVERHEAD
from remora.config import Settings
from remora.services.context import LazyQueue
from remora.upkeep.deliveries import Deliveries
from remora.upkeep.maintenance import Maintenance
from remora.upkeep.reconciler import Reconciler
from remora.upkeep.scheduler import Scheduler

log = logging.getLogger(__name__)

OUTBUF_HIGH_WATERMARK = 4 * 1024 * 1024  # unsent bytes per connection before a request thread waits for the client
OUTBUF_IN_MEMORY = 256 * 1024  # unsent bytes kept in memory per connection; beyond, waitress spills to a temporary file
OVER_CAP_BODY = b'{"error":"too many connections from this address (api.max_connections_per_client)","code":"UNAVAILABLE","details":{}}'


def _channel_class(send_timeout: float, per_client: int) -> type:
    """A waitress channel with a send timeout and a cap on connections per client address.

    waitress makes a request thread wait, without a limit, while a connection
    has more than ``outbuf_high_watermark`` unsent bytes; a client that never
    reads would hold that thread for ever.  Here the wait ends after
    ``send_timeout`` seconds without progress: the connection is closed and
    the thread is free again.  A client address that already holds
    ``per_client`` connections gets a 503 and the new connection is closed.
    """
    from waitress.channel import ClientDisconnected, HTTPChannel

    class Channel(HTTPChannel):  # type: ignore[misc]
        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
            host = addr[0] if isinstance(addr, tuple) else str(addr)
            same = sum(1 for c in list(server.active_channels.values()) if _host(getattr(c, "addr", None)) == host) if per_client else 0
            super().__init__(server, sock, addr, adj, map)
            self.over_cap = 0 < per_client <= same

        def received(self, data: bytes) -> bool:
            if not self.over_cap:
                return bool(super().received(data))
            if not self.close_when_flushed:  # answer the first request, read nothing more, then close
                self.outbufs[-1].append(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(OVER_CAP_BODY)).encode() + b"\r\n\r\n" + OVER_CAP_BODY
                )
                self.total_outbufs_len = len(self.outbufs[-1])
                self.close_when_flushed = True
            return True

        # Overrides waitress 3.0.x's own method (pinned in pyproject.toml): the same wait, with a send timeout.
        def _flush_outbufs_below_high_watermark(self) -> None:
            if self.total_outbufs_len <= self.adj.outbuf_high_watermark:
                return
            with self.outbuf_lock:
                _, exception = self._flush_exception(self._flush_some, do_close=False)
                if exception:
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(send_timeout)
                    return
                pending = self.total_outbufs_len
                deadline = time.monotonic() + send_timeout
                while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(min(1.0, send_timeout))
                    if self.total_outbufs_len < pending:
                        pending = self.total_outbufs_len
                        deadline = time.monotonic() + send_timeout
                    elif time.monotonic() >= deadline:
                        log.info("closing a connection from %s: no response bytes accepted for %.0fs", _host(self.addr), send_timeout)
                        self.will_close = True
                        self.server.pull_trigger()
                        raise ClientDisconnected

    return Channel


def _host(addr: Any) -> str | None:
    return str(addr[0]) if isinstance(addr, tuple) and addr else None


def make_app(settings: Settings, *, queue: Any = None, auth: bool = True, static_dir: Path | None = None) -> App:
    """The WSGI application. ``queue``: a QueueClient (default: one for ``settings.queue.addr``, created lazily)."""
    if queue is None:
        queue = LazyQueue(settings)
    return App(settings, queue=queue, auth=auth, static_dir=static_dir)


class APIServer:
    """The API on waitress in a background thread, with the reconciler, the maintenance loop and the scheduler.

    The database must already be initialised (``models.init_db``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int,
        auth: bool = True,
        queue: Any = None,
        static_dir: Path | None = None,
        reconcile_interval: float = 2.0,
        reconcile_settle: float = 5.0,
        maintenance_interval: float = 5.0,
        schedule_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._owns_queue = queue is None
        self.app = make_app(settings, queue=queue, auth=auth, static_dir=static_dir)
        self.reconciler = Reconciler(self.app.ctx, interval=reconcile_interval, settle=reconcile_settle)
        self.maintenance = Maintenance(settings, interval=maintenance_interval)
        self.deliveries = Deliveries(settings, self.app.ctx.secrets)
        self.scheduler = Scheduler(self.app.ctx, interval=schedule_interval, grace=settings.api.schedule_grace)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind, serve in a background thread, start the reconciler; returns when listening."""
        from waitress.server import create_server

        api = self.settings.api
        body_limit = max(api.max_body_size, self.settings.security.max_upload_size + UPLOAD_OVERHEAD)
        send_timeout = max(1.0, float(api.send_timeout))
        self._server = create_server(
            self.app,
            host=self.host,
            port=self.port,
            threads=max(1, api.threads),
            ident="remora",
            max_request_body_size=2 * body_limit + 1024 * 1024,
            channel_timeout=send_timeout,
            cleanup_interval=max(1, int(send_timeout // 2)),
            outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
            outbuf_overflow=OUTBUF_IN_MEMORY,
            # Read a connection only between its requests: reading ahead wakes the server's loop for a
            # keep-alive client's next request while the last one's thread still runs, and the two
            # threads' GIL hand-off added 2-4 ms to one list request in eight.  A change-feed waiter
            # notices its client left by itself (routes_events._gone).
            channel_request_lookahead=0,
            connection_limit=1000,
            # poll(), not select(): in `remora up` the worker's SSH connections (one per host) push the
            # API's socket numbers past 1024, where select() raises and the server's loop would end.
            asyncore_use_poll=True,
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )
        self._server.channel_class = _channel_class(send_timeout, max(0, api.max_connections_per_client))
        self._thread = threading.Thread(target=self._serve, name="api-server", daemon=True)
        self._thread.start()
        self.reconciler.start()
        self.maintenance.start()
        self.deliveries.start()
        self.scheduler.start()
        host, port = self.address
        log.info("API listening on http://%s:%d", host, port)

    def _serve(self) -> None:
        try:
            self._server.run()
        except Exception:  # after close() asyncore may complain about closed sockets
            if self._server is not None:
                log.debug("API server loop ended", exc_info=True)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.host, self.port
        return str(self._server.effective_host), int(self._server.effective_port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def serve_forever(self) -> None:
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the reconciler and maintenance, close every connection, join the threads."""
        self.reconciler.stop()
        self.maintenance.stop()
        self.deliveries.stop()
        self.scheduler.stop()
        server, self._server = self._server, None
        if server is not None:
            waitress_log = logging.getLogger("waitress")
            level = waitress_log.level
            waitress_log.setLevel(logging.CRITICAL)
            try:
                for channel in list(server._map.values()):
                    try:
                        channel.handle_close()
                    except Exception:  # noqa: BLE001 - closing anyway
                        pass
                server.task_dispatcher.shutdown()
            finally:
                waitress_log.setLevel(level)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.app.close()
        from remora.services import audit

        audit.flush()
        if self._owns_queue:
            closer = getattr(self.app.ctx.queue, "close", None)
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001
                    pass
