"""The route table: method + path pattern -> handler, role, schemas.

A path pattern is a ``/``-separated list of literal segments and typed
parameters (``{id:uuid}``, ``{filename:str}``).  Matching works on the shape
first (literals must equal, parameters take any one segment); among the
routes whose shape matches, the most literal ones win, so
``/api/v1/jobs/script`` is the script route (a GET there is 405), not a job
id.  A parameter whose value fails its converter (a job id that is not a
UUID) makes the request a 404 for that resource, never a 400 or a 500.

The same table feeds the OpenAPI document and the role-matrix test, so a new
route cannot miss its documentation or its authorization.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remora.errors import NotFound, RemoraError

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class MethodNotAllowed(RemoraError):
    code = "METHOD_NOT_ALLOWED"
    status = 405

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message, details={"allowed": allowed})
        self.allowed = allowed


def convert_uuid(value: str) -> str:
    if not UUID_RE.match(value):
        raise ValueError("not a UUID")
    return str(uuid.UUID(value))


def convert_str(value: str) -> str:
    if not value:
        raise ValueError("empty")
    return value


CONVERTERS: dict[str, Callable[[str], str]] = {"uuid": convert_uuid, "str": convert_str}


@dataclass
class Param:
    """A query parameter, documented in OpenAPI (the handler parses it)."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass
class Route:
    method: str
    pattern: str
    handler: Callable[..., Any]
    role: str | None  # None: open; else the weakest role allowed (viewer < runner < operator < admin)
    summary: str
    tag: str
    resource: str = "resource"  # what a 404 for a bad path parameter names
    body: dict[str, Any] | None = None  # JSON schema of the request body (validated before the handler)
    body_required: bool = True
    multipart: dict[str, Any] | None = None  # OpenAPI schema of a multipart body
    response: dict[str, Any] | None = None  # JSON schema of the success body
    status: int = 200
    query: list[Param] = field(default_factory=list)
    content_type: str = "application/json"
    errors: tuple[int, ...] = ()
    mutating: bool | None = None
    max_body: int | None = None  # overrides api.max_body_size (uploads)
    name: str = ""

    def __post_init__(self) -> None:
        self.segments = [s for s in self.pattern.split("/") if s]
        self.params: list[tuple[int, str, str]] = []
        for i, seg in enumerate(self.segments):
            if seg.startswith("{"):
                pname, _, conv = seg[1:-1].partition(":")
                self.params.append((i, pname, conv or "str"))
        self.literals = len(self.segments) - len(self.params)
        if self.mutating is None:
            self.mutating = self.method in ("POST", "PUT", "DELETE", "PATCH")
        if not self.name:
            self.name = self.handler.__name__

    @property
    def openapi_path(self) -> str:
        return "/" + "/".join(re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", s) for s in self.segments)

    def shape_matches(self, parts: list[str]) -> bool:
        if len(parts) != len(self.segments):
            return False
        return all(seg.startswith("{") or seg == part for seg, part in zip(self.segments, parts, strict=True))

    def bind(self, parts: list[str]) -> dict[str, str]:
        """Path parameters, converted; a value its converter refuses is a 404."""
        out = {}
        for i, pname, conv in self.params:
            try:
                out[pname] = CONVERTERS[conv](parts[i])
            except ValueError:
                raise NotFound(f"{self.resource} not found: {parts[i]!r}") from None
        return out


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._by_length: dict[int, list[Route]] = {}  # routes by segment count: a request only tries its own
        for route in routes:
            self._by_length.setdefault(len(route.segments), []).append(route)
        seen = set()
        for route in routes:
            key = (route.method, route.pattern)
            if key in seen:
                raise ValueError(f"duplicate route {route.method} {route.pattern}")
            seen.add(key)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method path`` and its parameters; NotFound / MethodNotAllowed otherwise."""
        parts = [p for p in path.split("/") if p]
        if len(path) > 2048 or len(parts) > 16:
            raise NotFound(f"no route for {path[:100]}")
        candidates = [r for r in self._by_length.get(len(parts), ()) if r.shape_matches(parts)]
        if not candidates:
            raise NotFound(f"no route for {path}")
        best = max(r.literals for r in candidates)
        top = [r for r in candidates if r.literals == best]
        method = "GET" if method == "HEAD" else method
        for route in top:
            if route.method == method:
                return route, route.bind(parts)
        allowed = sorted({r.method for r in top} | ({"HEAD"} if any(r.method == "GET" for r in top) else set()) | {"OPTIONS"})
        raise MethodNotAllowed(f"method {method} not allowed on {path}", allowed)
