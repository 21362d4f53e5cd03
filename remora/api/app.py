"""The WSGI application: routing, auth, limits, CORS, error envelope, metrics, audit, static files.

Every answer that is not a success is ``{"error", "code", "details"}`` with
a fitting status; an unexpected exception is logged with its request id and
answered 500 in the same envelope (and is a bug).  Handlers are thin: they
get ``(app, request)`` and return data (JSON, the route's status) or a
``Response``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from remora import models
from remora.api import staticfiles
from remora.api.http import Request, Response, dumps, error_body, json_response
from remora.api.limits import FailureLimiter, StreamSlots, TooManyRequests
from remora.api.metrics import Metrics
from remora.api.router import MethodNotAllowed, Route, Router
from remora.api.schema import validate
from remora.auth import Authenticator
from remora.config import Settings
from remora.errors import Forbidden, NotFound, RemoraError, Unauthorized, Unavailable
from remora.logs import set_request_id
from remora.services import audit
from remora.services.context import Context
from remora.services.debug import RequestLog
from remora.services.files import PathTraversal

log = logging.getLogger(__name__)
access_log = logging.getLogger("remora.api.access")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# Sent on every response (dashboard pages, scripts, JSON, errors): no inline script or style, no framing,
# no referrer, no content sniffing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)
CORS_HEADERS = "Authorization, Content-Type, If-None-Match, X-Request-Id"
EXPOSED_HEADERS = "ETag, X-Request-Id, Retry-After"


def printable(text: str) -> str:
    """``text`` for a log line: control characters, line and paragraph separators and backslashes escaped.

    A request path can then never start a second, forged line in the log.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii") for ch in text)


class InternalError(RemoraError):
    code = "INTERNAL_ERROR"
    status = 500


class App:
    """The Remora REST API as a WSGI callable."""

    def __init__(self, settings: Settings, *, queue: Any = None, auth: bool = True, static_dir: Any = None) -> None:
        from remora.api.routes import all_routes

        self.settings = settings
        self.ctx = Context(settings, queue)
        self.router = Router(all_routes(settings))
        self.authenticator = Authenticator(enabled=auth)
        self.metrics = Metrics()
        self.static = staticfiles.StaticFiles(static_dir)
        self.cors_origins = set(settings.api.cors_allowed_origins)
        self.started_at = time.time()
        threads = max(1, settings.api.threads)
        # Downloads of raw output hold a request thread while the client reads: half the threads at most,
        # a quarter per client address, so /health and the rest of the API always have threads left.
        self.streams = StreamSlots(threads // 2, threads // 4)
        # Live queue monitors (Server-Sent Events) hold a thread for their whole life: a quarter of the threads, 2 per client.
        self.monitors = StreamSlots(max(1, threads // 4), 2, "live queue monitors")
        # Change-feed watchers (long-polls and event streams) wait in a request thread: half the threads, a quarter per client.
        self.watchers = StreamSlots(max(1, threads // 2), max(1, threads // 4), "change feed watchers")
        self.auth_limiter = FailureLimiter(settings.api.auth_failures_per_second)
        self.request_log = RequestLog()  # the debug report's recent requests and errors

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

    def close(self) -> None:
        self.authenticator.close()

    # -- WSGI ------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        supplied = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = supplied if REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex[:16]
        set_request_id(request_id)
        req = Request(environ, max_body=self.settings.api.max_body_size)
        req.request_id = request_id
        try:
            response = self._respond(req)
        finally:
            set_request_id(None)
        if req.method == "HEAD" or response.status == 304:
            response.run_on_close()
        response.headers.append(("X-Request-Id", request_id))
        self._add_cors(req, response)
        elapsed = time.perf_counter() - started
        self.metrics.observe(req.route_name or "unmatched", req.method, response.status, elapsed)
        self._remember(req, response, elapsed, request_id)
        if access_log.isEnabledFor(logging.INFO):
            who = req.identity.name if req.identity else "-"
            access_log.info(
                "%s %s %d %.1fms %s [req %s]", req.method, printable(req.path[:200]), response.status, elapsed * 1000, who, request_id
            )
        present = {name.lower() for name, _ in response.headers}
        headers = [("Content-Type", response.content_type), *response.headers]
        headers += [(name, value) for name, value in SECURITY_HEADERS if name.lower() not in present]
        if isinstance(response.body, bytes):
            headers.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {REASONS.get(response.status, 'Unknown')}", headers)
        if req.method == "HEAD" or response.status == 304:
            return [b""]
        return _ClosingIterator(response.iter_body(), request_id, response.run_on_close)

    def _remember(self, req: Request, response: Response, elapsed: float, request_id: str) -> None:
        """Keep the request (path without its query string) for the debug report; error answers with their code."""
        entry = {
            "at": round(time.time(), 3),
            "method": req.method,
            "path": printable(req.path[:200]),
            "route": req.route_name or "unmatched",
            "status": response.status,
            "ms": round(elapsed * 1000, 2),
            "actor": req.identity.name if req.identity else None,
            "request_id": request_id,
        }
        error = None
        if response.status >= 400:
            error = {"code": None, "error": None}
            if isinstance(response.body, bytes) and response.body[:1] == b"{":
                try:
                    body = json.loads(response.body)
                    error = {"code": body.get("code"), "error": str(body.get("error") or "")[:300]}
                except ValueError:
                    pass
        self.request_log.record(entry, error)

    def _respond(self, req: Request) -> Response:
        try:
            return self._dispatch(req)
        except RemoraError as exc:
            return self._error(exc)
        except models.OperationalError as exc:
            log.error("database error: %s", exc)
            return self._error(Unavailable("the database is unavailable", retry_after=5))
        except Exception:
            log.exception("unhandled error in %s %s", req.method, printable(req.path[:200]))
            return self._error(InternalError("internal error: see the server log with this request id"))

    def _error(self, exc: RemoraError) -> Response:
        response = Response(status=exc.status, body=dumps(error_body(exc)))
        if exc.status in (429, 503):
            response.header("Retry-After", str(getattr(exc, "retry_after", None) or exc.details.get("retry_after", 5)))
        if isinstance(exc, MethodNotAllowed):
            response.header("Allow", ", ".join(exc.allowed))
        if isinstance(exc, Unauthorized):
            response.header("WWW-Authenticate", 'Bearer realm="remora"')
        return response

    def _dispatch(self, req: Request) -> Response:
        if req.method == "OPTIONS":
            return self._preflight(req)
        if any(seg == ".." for seg in req.path.split("/")) or "\\" in req.path or "\x00" in req.path:
            raise PathTraversal(
                "invalid path: '..' segments, backslashes and NUL are not allowed",
                details={"path": "must not contain '..', backslashes or NUL"},
            )
        if not (req.path.startswith("/api/") or req.path in ("/health", "/metrics")):
            if req.method in ("GET", "HEAD"):
                req.route_name = "static"
                return self.static.serve(req.path)
            raise NotFound(f"no route for {req.path[:100]}")
        route, params = self.router.match(req.method, req.path)
        req.route_name = route.name
        req.path_params = params
        if route.role is not None:
            req.identity = self._authenticate(req)
            self.authenticator.authorize(req.identity, route.role)
        if route.max_body is not None:
            req.max_body = route.max_body
        args: list[Any] = []
        if route.body is not None:
            body = req.json(required=route.body_required)
            args.append(None if body is None and not route.body_required else validate(route.body, body))
        result = route.handler(self, req, *args)
        response = result if isinstance(result, Response) else json_response(result, route.status)
        if route.mutating and response.status < 400:
            actor = req.identity.name if req.identity else "anonymous"
            target_type, target_id = req.audit_target or (route.tag, next(iter(params.values()), ""))
            audit.record(actor, route.name, target_type, target_id, req.audit_details, req.request_id)
        return response

    def _authenticate(self, req: Request) -> Any:
        """The request's identity; refused credentials count per client address, and beyond the limit are 429."""
        header = req.header("Authorization")
        try:
            return self.authenticator.authenticate(header)
        except Unauthorized:
            if not header:  # no credentials at all is not an attempt: a plain 401
                raise
            wait = self.auth_limiter.retry_after(req.client)
            self.auth_limiter.failed(req.client)
            self.metrics.auth_failed(limited=wait is not None)
            if wait is not None:
                raise TooManyRequests(f"too many failed authentications from this address: retry after {wait}s", retry_after=wait) from None
            raise

    # -- CORS --------------------------------------------------------------
    def origin_allowed(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.cors_origins or origin in self.cors_origins)

    def _preflight(self, req: Request) -> Response:
        origin = req.header("Origin")
        if origin is None:
            if req.path.startswith("/api/") or req.path in ("/health", "/metrics"):
                try:
                    self.router.match("GET", req.path)
                except MethodNotAllowed as exc:
                    return Response(status=204).header("Allow", ", ".join(exc.allowed))
            return Response(status=204).header("Allow", "GET, HEAD, OPTIONS")
        if not self.origin_allowed(origin):
            return self._error(
                Forbidden(f"origin {origin[:200]} is not allowed (api.cors_allowed_origins)", details={"origin": origin[:200]})
            )
        response = Response(status=204)
        response.header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
        response.header("Access-Control-Allow-Headers", CORS_HEADERS)
        response.header("Access-Control-Max-Age", "600")
        return response

    def _add_cors(self, req: Request, response: Response) -> None:
        origin = req.header("Origin")
        if origin and self.origin_allowed(origin):
            response.header("Access-Control-Allow-Origin", origin)
            response.header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
            response.header("Vary", "Origin")


class _ClosingIterator:
    """Yields a body; returns a pooled PostgreSQL connection to its pool when done."""

    def __init__(self, body: Iterator[bytes], request_id: str, on_close: Callable[[], None] | None = None) -> None:
        self._body = body
        self._request_id = request_id
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception:
            set_request_id(self._request_id)
            log.exception("error while streaming a response body")
            set_request_id(None)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
        models.release_connection()
