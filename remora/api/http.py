"""Request and Response for the WSGI app: JSON in, JSON out, limits enforced."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from remora.auth import Identity
from remora.errors import PayloadTooLarge, RemoraError, ValidationError

JSON_TYPE = "application/json"


class UnsupportedMediaType(RemoraError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


class Request:
    """One HTTP request. The body is read once, never beyond ``max_body`` bytes."""

    def __init__(self, environ: dict[str, Any], *, max_body: int) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        raw_path = environ.get("PATH_INFO", "/") or "/"
        try:  # WSGI gives latin-1 decoded bytes; paths are UTF-8
            self.path = raw_path.encode("latin-1").decode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            self.path = raw_path
        self.query_string = str(environ.get("QUERY_STRING", ""))
        self.client = str(environ.get("REMOTE_ADDR") or "-")
        self.max_body = max_body
        self.path_params: dict[str, str] = {}
        self.identity: Identity | None = None
        self.request_id = ""
        self.route_name = ""
        self.audit_target: tuple[str, str] | None = None  # (type, id) set by handlers
        self.audit_details: dict[str, Any] = {}
        self._body: bytes | None = None
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            try:
                self._query = parse_qs(self.query_string, keep_blank_values=True, max_num_fields=200)
            except ValueError:
                raise ValidationError("too many query parameters") from None
        return self._query

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def header(self, name: str, default: str | None = None) -> str | None:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return self.environ.get(key, default)
        return self.environ.get("HTTP_" + key, default)

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def body(self) -> bytes:
        if self._body is not None:
            return self._body
        length_text = self.environ.get("CONTENT_LENGTH") or ""
        stream = self.environ.get("wsgi.input")
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                raise ValidationError("invalid Content-Length") from None
            if length > self.max_body:
                raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")
            data = stream.read(length) if (stream is not None and length > 0) else b""
        else:
            data = stream.read(self.max_body + 1) if stream is not None else b""
            if len(data) > self.max_body:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.max_body} bytes")
        self._body = data
        return data

    def json(self, *, required: bool = True) -> Any:
        """The body parsed as JSON; ``None`` when empty and not required."""
        data = self.body()
        if not data.strip():
            if required:
                raise ValidationError("request body is empty: expected a JSON object", details={"body": "is required"})
            return None
        ctype = self.content_type
        if ctype and ctype != JSON_TYPE and not ctype.endswith("+json"):
            raise UnsupportedMediaType(f"Content-Type {ctype} is not supported: send application/json")
        try:
            value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_float=_parse_float)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ValidationError(f"malformed JSON body: {exc}", details={"body": "malformed JSON"}) from None
        if b"\\u" in data:  # only an escape can make a lone surrogate
            _reject_lone_surrogates(value)
        return value


def _reject_lone_surrogates(value: Any) -> None:
    """A ``\\ud800``-style escape without its pair decodes to text that is not Unicode: refuse it (400)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "malformed JSON body: a lone surrogate escape (\\ud800-\\udfff without its pair) is not text",
            details={"body": "malformed JSON: lone surrogate"},
        ) from None


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = JSON_TYPE
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def run_on_close(self) -> None:
        """Run (once) what must happen when the body is sent or abandoned, e.g. freeing a download slot."""
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()

    def header(self, name: str, value: str) -> Response:
        self.headers.append((name, value))
        return self

    def iter_body(self) -> Iterator[bytes]:
        if isinstance(self.body, bytes):
            yield self.body
        else:
            yield from self.body


def dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status=status, body=dumps(data))


def error_body(exc: RemoraError) -> dict[str, Any]:
    return {"error": exc.message, "code": exc.code, "details": exc.details or {}}
