"""Serving the API: ``make_app`` (the WSGI callable) and ``APIServer`` (waitress in a thread + reconciler + maintenance)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from remora.api.app import App
from remora.api.routes_files import UPLOAD_OVERHEAD
from remora.config import Settings
from remora.services.context import LazyQueue
from remora.upkeep.maintenance import Maintenance
from remora.upkeep.reconciler import Reconciler

log = logging.getLogger(__name__)


def make_app(settings: Settings, *, queue: Any = None, auth: bool = True, static_dir: Path | None = None) -> App:
    """The WSGI application. ``queue``: a QueueClient (default: one for ``settings.queue.addr``, created lazily)."""
    if queue is None:
        queue = LazyQueue(settings)
    return App(settings, queue=queue, auth=auth, static_dir=static_dir)


class APIServer:
    """The API on waitress in a background thread, with the reconciler and the maintenance loop.

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
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._owns_queue = queue is None
        self.app = make_app(settings, queue=queue, auth=auth, static_dir=static_dir)
        self.reconciler = Reconciler(self.app.ctx, interval=reconcile_interval, settle=reconcile_settle)
        self.maintenance = Maintenance(settings, interval=maintenance_interval)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind, serve in a background thread, start the reconciler; returns when listening."""
        from waitress.server import create_server

        body_limit = max(self.settings.api.max_body_size, self.settings.security.max_upload_size + UPLOAD_OVERHEAD)
        self._server = create_server(
            self.app,
            host=self.host,
            port=self.port,
            threads=max(1, self.settings.api.threads),
            ident="remora",
            max_request_body_size=2 * body_limit + 1024 * 1024,
            channel_timeout=120,
            connection_limit=1000,
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )
        self._thread = threading.Thread(target=self._serve, name="api-server", daemon=True)
        self._thread.start()
        self.reconciler.start()
        self.maintenance.start()
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
