"""Browser-test setup through the public REST API (over tests/support/http.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.support.http import request


def call(stack: Any, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """``method /api/v1/<path>`` on the stack's API with its admin token (or ``token``): ``(status, decoded body)``."""
    url = urlsplit(stack.url)
    reply = request(url.hostname or "127.0.0.1", url.port or 80, method, f"/api/v1/{path}", body, token=token or stack.token, timeout=10)
    return reply.status, reply.data


def ok(stack: Any, method: str, path: str, body: Any = None) -> Any:
    status, data = call(stack, method, path, body)
    assert status < 300, f"{method} {path} -> {status} {data}"
    return data


def local_server_id(stack: Any) -> str:
    servers = ok(stack, "GET", "servers")["servers"]
    return next(s["id"] for s in servers if s["name"] == "local")


def submit(stack: Any, command: str, *, server_id: str | None = None, **extra: Any) -> dict:
    body = {"command": command, "server_id": server_id or local_server_id(stack), **extra}
    return ok(stack, "POST", "jobs", body)


def key_server(stack: Any, sshd: Any, name: str, tags: list[str] | None = None) -> dict:
    body = {
        "name": name,
        "hostname": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "auth_type": "key",
        "private_key": sshd.private_key,
        "tags": tags or [],
    }
    return ok(stack, "POST", "servers", body)
