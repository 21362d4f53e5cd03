"""A tiny HTTP client for test setup through the public REST API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call(stack: Any, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{stack.url}/api/v1/{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or stack.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            raw = res.read()
            return res.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


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
