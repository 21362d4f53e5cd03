"""Browser tests: a real Remora (NetQueue + worker + API on SQLite) and headless Chromium.

One Remora stack serves the whole module set (started once, ~1 s); every test
gets a fresh browser page.  Screenshots go to ``test-output/browser/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.pages import OUTPUT


@dataclass
class Stack:
    url: str
    token: str
    viewer_token: str
    settings: Any
    queue: Any
    worker: Any
    api: Any

    def stop(self) -> None:
        for part, stop in (
            (self.worker, lambda w: w.stop(graceful=False, timeout=5)),
            (self.api, lambda a: a.stop()),
            (self.queue, lambda q: q.stop()),
        ):
            try:
                stop(part)
            except Exception:
                pass


def start_stack(data_dir: Path, *, concurrency: int = 6) -> Stack:
    """Queue, worker and API in this process, like `remora up`, on loopback port 0."""
    from remora import config, models, services
    from remora.api.server import APIServer
    from remora.netqueue.server import QueueServer
    from remora.worker import Worker

    overrides = {
        "database.data_dir": str(data_dir),
        "queue.addr": "127.0.0.1:0",
        "queue.fsync": "never",
        "worker.concurrency": concurrency,
        "worker.heartbeat_interval": 0.2,
        "output.flush_interval": 0.1,
        "output.flush_lines": 1,
        "security.allowed_shells": ["/bin/sh", "/bin/bash"],
        "api.max_timeout": 7200,
    }
    settings = config.load(None, env={}, overrides=overrides)
    models.init_db(settings.database_url)
    queue = QueueServer.from_settings(settings, host="127.0.0.1", port=0)
    queue.start()
    settings = config.load(None, env={}, overrides={**overrides, "queue.addr": f"127.0.0.1:{queue.address[1]}"})
    services.ensure_local_server()
    _, token = services.create_token("browser-admin", "admin")
    _, viewer = services.create_token("browser-viewer", "viewer")
    worker = Worker(settings, concurrency=concurrency)
    worker.start()
    api = APIServer(settings, host="127.0.0.1", port=0)
    api.start()
    host, port = api.address
    return Stack(url=f"http://{host}:{port}", token=token, viewer_token=viewer, settings=settings, queue=queue, worker=worker, api=api)


@pytest.fixture(scope="package")
def remora_stack(tmp_path_factory) -> Iterator[Stack]:
    # Package scope, not session: the stack's in-process reconciler and worker use the process's one
    # database binding, so they must be gone before other packages bind their own databases.
    stack = start_stack(tmp_path_factory.mktemp("remora-browser"))
    yield stack
    stack.stop()


@pytest.fixture
def page(browser, request) -> Iterator[Any]:
    """A fresh page (own storage); a screenshot of its last state is saved after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(10_000)
    yield pg
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(OUTPUT / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)}.png"), full_page=False)
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
