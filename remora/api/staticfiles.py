"""The dashboard's static files, from the package (works inside the zipapp).

``/`` is ``index.html``; ``/static/<path>`` and top-level files are served
from ``remora/api/static/``.  Paths with ``..``, empty or hidden segments or
backslashes are refused, so nothing outside that directory can be read.
"""

from __future__ import annotations

import importlib.resources
import mimetypes
from pathlib import Path
from typing import Any

from remora.api.http import Response
from remora.errors import NotFound

CACHE = "no-cache"


class StaticFiles:
    def __init__(self, root: Path | None = None) -> None:
        self.root: Any = root if root is not None else importlib.resources.files("remora.api") / "static"

    def _resolve(self, path: str) -> Any:
        rel = path[len("/static/") :] if path.startswith("/static/") else path.lstrip("/")
        if rel in ("", "index.html"):
            rel = "index.html"
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
            raise NotFound(f"no file {path[:100]}")
        node = self.root
        for part in parts:
            node = node / part
        try:
            if not node.is_file():
                raise NotFound(f"no file {path[:100]}")
        except OSError:
            raise NotFound(f"no file {path[:100]}") from None
        return node

    def serve(self, path: str) -> Response:
        node = self._resolve(path)
        data = node.read_bytes()
        ctype = mimetypes.guess_type(node.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json", "image/svg+xml"):
            ctype += "; charset=utf-8"
        response = Response(status=200, body=data, content_type=ctype)
        response.header("Cache-Control", CACHE)
        response.header("X-Content-Type-Options", "nosniff")
        return response
