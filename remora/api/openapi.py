"""The OpenAPI 3.1 document, generated from the route table and its schemas (it cannot drift)."""

from __future__ import annotations

from typing import Any

from remora import __version__
from remora.api.router import Route
from remora.config import Settings

ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}, "details": {"type": "object"}},
}
DESCRIPTIONS = {
    304: "Not modified (ETag matched If-None-Match)",
    400: "Invalid input (details name each field)",
    401: "Missing, invalid or expired token",
    403: "The token's role may not do this",
    404: "Unknown id or route",
    405: "Method not allowed",
    409: "Conflict with the current state",
    410: "No longer kept (e.g. an expired change-feed cursor: reload and follow from now)",
    413: "Body or upload too large",
    415: "Unsupported Content-Type",
    429: "Too many refused tokens or downloads from this address (see Retry-After)",
    503: "A dependency is unavailable (see Retry-After)",
}
PATH_SCHEMAS = {"uuid": {"type": "string", "format": "uuid"}, "str": {"type": "string", "minLength": 1}}


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(route: Route) -> dict[str, Any]:
    # x-remora-role: the least role that may call it (viewer < operator < admin); "public" needs no token
    op: dict[str, Any] = {"operationId": route.name, "summary": route.summary, "tags": [route.tag], "x-remora-role": route.role or "public"}
    params = [{"name": name, "in": "path", "required": True, "schema": PATH_SCHEMAS[conv]} for _, name, conv in route.params]
    params += [
        {"name": p.name, "in": "query", "required": p.required, "schema": p.schema, "description": p.description} for p in route.query
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required, "content": {"application/json": {"schema": route.body}}}
    elif route.multipart is not None:
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": route.multipart}}}
    if route.content_type in ("text/plain", "text/event-stream"):
        success: dict[str, Any] = {"description": "OK", "content": {route.content_type: {"schema": {"type": "string"}}}}
    else:
        success = {"description": "OK", "content": {"application/json": {"schema": route.response or {"type": "object"}}}}
    responses: dict[str, Any] = {str(route.status): success}
    codes = set(route.errors)
    if route.body is not None or route.multipart is not None:
        codes |= {400, 413, 415}
    if route.params:
        codes.add(404)
    if route.role is not None:
        codes |= {401, 403, 429}
        op["security"] = [{"bearerAuth": []}]
    else:
        op["security"] = []
    for status in sorted(codes):
        responses[str(status)] = _error_response(status)
    op["responses"] = responses
    return op


def build(routes: list[Route], settings: Settings) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route)
    paths["/"] = {
        "get": {
            "operationId": "dashboard",
            "summary": "The dashboard (static files)",
            "tags": ["dashboard"],
            "security": [],
            "responses": {
                "200": {"description": "index.html", "content": {"text/html": {"schema": {"type": "string"}}}},
                "404": _error_response(404),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Remora API",
            "version": __version__,
            "description": "Run shell commands and scripts on servers through a durable priority queue. Every error is "
            '{"error", "code", "details"}.',
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (remora token create)."}},
        },
        "security": [{"bearerAuth": []}],
        "tags": [{"name": t} for t in ("jobs", "servers", "files", "queue", "tokens", "system", "dashboard")],
    }
