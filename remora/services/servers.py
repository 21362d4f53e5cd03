"""Server use-cases: CRUD with secrets encrypted at rest, targets of a fan-out, reachability."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from remora import models
from remora.errors import Conflict, NotFound, ValidationError
from remora.models import AuthType, Job, JobStatus, PemKey, Server
from remora.services.context import Context

log = logging.getLogger(__name__)

LOCAL_SERVER = "local"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SECRET_FIELDS = ("password", "private_key", "passphrase")
PLAIN_FIELDS: tuple[str, ...] = (
    "name",
    "hostname",
    "port",
    "user",
    "auth_type",
    "pem_file",
    "host_key_policy",
    "tags",
    "max_concurrent_jobs",
    "is_active",
)
PLAIN_FIELDS = (*PLAIN_FIELDS, "description")


def get_server(server_id: str) -> Server:
    server = Server.get_or_none(Server.id == server_id)
    if server is None:
        raise NotFound(f"server not found: {server_id}")
    return server


TARGET_COLUMNS = (Server.id, Server.name, Server.hostname, Server.auth_type, Server.is_active, Server.max_concurrent_jobs, Server.tags)
TARGET_TTL = 2.0  # seconds a looked-up target server is reused (writes in this process forget it at once)


class _TargetCache:
    """Submission targets by id or name, kept for ``TARGET_TTL`` seconds.

    A busy API resolves the same few servers for every submission; this
    saves a query per job.  Server writes through this module forget the
    cache at once; a write by another process is seen within the TTL (a
    deleted server then fails the insert, which forgets the cache too).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Server]] = {}
        self._database: object = None

    def get(self, ref: str) -> Server | None:
        now = time.monotonic()
        with self._lock:
            if self._database is not models.get_database():
                self._entries.clear()
                self._database = models.get_database()
            hit = self._entries.get(ref)
        return hit[1] if hit is not None and hit[0] > now else None

    def put(self, ref: str, server: Server) -> None:
        with self._lock:
            if len(self._entries) > 10000:
                self._entries.clear()
            self._entries[ref] = (time.monotonic() + TARGET_TTL, server)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_targets = _TargetCache()


def forget_servers() -> None:
    """Drop cached submission targets (after a server write)."""
    _targets.clear()


def _by_id_or_name(ref: str, field_name: str) -> Server:
    server = _targets.get(ref)
    if server is not None:
        return server
    column = Server.id if UUID_RE.match(ref) else Server.name
    server = Server.select(*TARGET_COLUMNS).where(column == ref).first()
    if server is None and column is Server.id:
        server = Server.select(*TARGET_COLUMNS).where(Server.name == ref).first()
    if server is None:
        raise ValidationError(f"{field_name}: no server {ref!r}", details={field_name: f"no server with id or name {ref!r}"})
    _targets.put(ref, server)
    return server


def resolve_servers(server_id: str | None, server_ids: list[str], names: list[str]) -> list[Server]:
    """The target servers of a submission, in order, without duplicates.

    ``server_id`` / ``server_ids`` take ids (or names); ``servers`` takes names,
    ids and ``tag:x`` (every active server carrying tag x).
    """
    found: dict[str, Server] = {}
    refs: list[tuple[str, str]] = [(server_id, "server_id")] if server_id else []
    refs += [(ref, "server_ids") for ref in server_ids] + [(ref, "servers") for ref in names]
    all_servers: list[Server] | None = None
    for ref, field_name in refs:
        if field_name == "servers" and ref.startswith("tag:"):
            tag = ref[4:]
            if all_servers is None:
                all_servers = list(Server.select(*TARGET_COLUMNS).where(Server.is_active == True))  # noqa: E712
            tagged = [s for s in all_servers if tag in (s.tags or [])]
            if not tagged:
                raise ValidationError(
                    f"servers: no active server has tag {tag!r}", details={"servers": f"no active server has tag {tag!r}"}
                )
            for server in tagged:
                found.setdefault(server.id, server)
            continue
        server = _by_id_or_name(ref, field_name)
        if not server.is_active:
            raise ValidationError(f"server {server.name} is inactive", details={field_name: f"server {server.name} is inactive"})
        found.setdefault(server.id, server)
    if not found:
        raise ValidationError("no target server", details={"server_id": "is required"})
    if len(found) > 1000:
        raise ValidationError("too many target servers (at most 1000)", details={"servers": "at most 1000 targets"})
    return list(found.values())


def _check_auth(data: dict[str, Any], server: Server | None) -> None:
    auth_type = data.get("auth_type", server.auth_type if server else AuthType.KEY.value)
    errors: dict[str, str] = {}
    if auth_type != AuthType.LOCAL.value:
        hostname = data.get("hostname", server.hostname if server else "")
        if not hostname or not str(hostname).strip():
            errors["hostname"] = "is required"
        user = data.get("user", server.user if server else "")
        if not user:
            errors["user"] = "is required"
    has_password = data.get("password") or (server is not None and server.password is not None and "password" not in data)
    has_key = data.get("private_key") or (server is not None and server.private_key is not None and "private_key" not in data)
    pem = data.get("pem_file", server.pem_file if server else None)
    if auth_type == AuthType.PASSWORD.value and not has_password:
        errors["password"] = "is required with auth_type password"
    if auth_type in (AuthType.KEY.value, AuthType.PEM.value) and not (has_key or pem):
        errors["private_key"] = "a private_key or pem_file is required with auth_type key"
    if pem and not PemKey.select().where(PemKey.filename == pem).exists():
        errors["pem_file"] = f"no uploaded key named {pem!r}"
    if errors:
        name, message = next(iter(errors.items()))
        raise ValidationError(f"invalid server: {name} {message}", details=errors)


MAX_JUMP_HOPS = 16  # jump servers in one chain


def find_server(ref: str) -> Server | None:
    """A server by id or name (full row)."""
    server = Server.get_or_none(Server.id == ref) if UUID_RE.match(ref) else None
    return server or Server.get_or_none(Server.name == ref)


def jump_chain(server: Server) -> list[Server]:
    """The servers ``server`` connects through, first hop first (ValidationError on a loop or a missing hop)."""
    chain: list[Server] = []
    seen = [server.id]
    current = server
    while current.jump_server_id:
        names = [server.name, *(s.name for s in reversed(chain))]
        if current.jump_server_id in seen:
            loop = Server.get_or_none(Server.id == current.jump_server_id)
            path = " -> ".join([*names, loop.name if loop else current.jump_server_id])
            raise ValidationError(f"jump_server: loop {path}", details={"jump_server": f"loop {path}"})
        if len(chain) >= MAX_JUMP_HOPS:
            raise ValidationError(
                f"jump_server: more than {MAX_JUMP_HOPS} jump servers in the chain of {server.name}",
                details={"jump_server": f"at most {MAX_JUMP_HOPS} hops"},
            )
        hop = Server.get_or_none(Server.id == current.jump_server_id)
        if hop is None:
            raise ValidationError(f"jump_server of {current.name} does not exist", details={"jump_server": "not found"})
        seen.append(hop.id)
        chain.insert(0, hop)
        current = hop
    return chain


def _check_jump(data: dict[str, Any], server: Server) -> None:
    """Resolve ``data["jump_server"]`` (name or id) into ``server.jump_server_id`` and refuse loops and local hops (400)."""
    local = AuthType.LOCAL.value
    if "jump_server" in data:
        ref = data["jump_server"]
        if ref in (None, ""):
            server.jump_server = None
        else:
            jump = find_server(str(ref))
            if jump is None:
                raise ValidationError(f"jump_server: no server {ref!r}", details={"jump_server": f"no server with id or name {ref!r}"})
            if jump.id == server.id:
                raise ValidationError(
                    f"jump_server: server {server.name} cannot jump through itself", details={"jump_server": "cannot be the server itself"}
                )
            if jump.auth_type == local:
                raise ValidationError(
                    f"jump_server: {jump.name} is a local server and cannot be a jump host",
                    details={"jump_server": "a local server cannot be a jump host"},
                )
            server.jump_server = jump
    if server.jump_server_id is None:
        if server.auth_type == local and Server.select().where(Server.jump_server == server.id).exists():
            raise ValidationError(
                f"server {server.name} is a jump host and cannot be local", details={"auth_type": "a jump host cannot be local"}
            )
        return
    if server.auth_type == local:
        raise ValidationError(
            f"server {server.name} is local and cannot have a jump_server", details={"jump_server": "a local server connects directly"}
        )
    jump_chain(server)


def jump_users(server: Server) -> list[str]:
    """Names of the servers that connect through ``server``."""
    return [s.name for s in Server.select(Server.name).where(Server.jump_server == server.id).order_by(Server.name)]


def _apply(ctx: Context, server: Server, data: dict[str, Any]) -> None:
    for name in PLAIN_FIELDS:
        if name in data:
            setattr(server, name, data[name])
    # an uploaded key is auth type "pem" for the executor, whichever of key/pem the client said
    if server.pem_file and server.auth_type == AuthType.KEY.value and not data.get("private_key"):
        server.auth_type = AuthType.PEM.value
    for name in SECRET_FIELDS:
        if name in data:
            value = data[name]
            setattr(server, name, ctx.secrets.encrypt(value) if value else None)


def create_server(ctx: Context, data: dict[str, Any]) -> Server:
    """Create a server (secrets encrypted). 409 when the name is taken."""
    _check_auth(data, None)
    server = Server(id=models.new_id())
    _apply(ctx, server, data)
    try:
        with models.write_transaction():
            if Server.select().where(Server.name == data["name"]).exists():
                raise Conflict(f"a server named {data['name']!r} exists", details={"name": "already exists"})
            _check_jump(data, server)
            server.save(force_insert=True)
    except models.IntegrityError:
        raise Conflict(f"a server named {data['name']!r} exists", details={"name": "already exists"}) from None
    finally:
        forget_servers()
    return server


def update_server(ctx: Context, server_id: str, data: dict[str, Any]) -> Server:
    """Partial update; a secret set to null or "" is removed."""
    server = get_server(server_id)
    _check_auth(data, server)
    _apply(ctx, server, data)
    server.updated_at = models.utcnow()
    try:
        with models.write_transaction():
            if "name" in data and Server.select().where(Server.name == data["name"], Server.id != server.id).exists():
                raise Conflict(f"a server named {data['name']!r} exists", details={"name": "already exists"})
            _check_jump(data, server)
            server.save()
    except models.IntegrityError:
        raise Conflict("a server with that name exists", details={"name": "already exists"}) from None
    finally:
        forget_servers()
    return server


def delete_server(server_id: str, *, force: bool = False) -> int:
    """Delete a server. 409 with queued/running jobs; 409 with history unless ``force`` (which deletes it)."""
    server = get_server(server_id)
    active = Job.select().where(Job.server == server.id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])).count()
    if active:
        raise Conflict(f"server has {active} queued or running job(s); cancel them first", details={"active_jobs": active})
    behind = jump_users(server)
    if behind:
        raise Conflict(
            f"server {server.name} is the jump server of {', '.join(behind)}; change their jump_server first",
            details={"jump_server_of": behind},
        )
    history = Job.select().where(Job.server == server.id).count()
    if history and not force:
        raise Conflict(f"server has {history} finished job(s); pass force=true to delete them too", details={"jobs": history})
    with models.write_transaction():
        Job.delete().where(Job.server == server.id).execute()
        server.delete_instance()
    forget_servers()
    return history


def list_servers(active: bool | None = None, tag: str | None = None) -> list[Server]:
    query = Server.select().order_by(Server.name)
    if active is not None:
        query = query.where(Server.is_active == active)
    servers = list(query)
    if tag:
        servers = [s for s in servers if tag in (s.tags or [])]
    return servers


def ensure_local_server() -> Server:
    """The built-in ``local`` server (runs jobs on the worker's own machine); created once."""
    server = Server.get_or_none(Server.name == LOCAL_SERVER)
    if server is not None:
        return server
    try:
        with models.write_transaction():
            return Server.create(
                name=LOCAL_SERVER,
                hostname="localhost",
                port=0,
                user="",
                auth_type=AuthType.LOCAL.value,
                description="The worker's own machine (subprocess, no SSH).",
            )
    except models.IntegrityError:
        return Server.get(Server.name == LOCAL_SERVER)


def probe(server: Server, timeout: float) -> dict[str, Any]:
    """TCP reachability of one server (no login)."""
    checked_at = models.utcnow()
    base = {"server_id": server.id, "server_name": server.name, "hostname": server.hostname, "port": server.port}
    if server.auth_type == AuthType.LOCAL.value:
        status, message = "connected", "local server (no network needed)"
    else:
        start = time.monotonic()
        try:
            with socket.create_connection((server.hostname, server.port), timeout=timeout):
                pass
            status, message = "connected", f"TCP port {server.port} reachable in {(time.monotonic() - start) * 1000:.1f} ms"
        except (OSError, ValueError, UnicodeError) as exc:
            status, message = "disconnected", f"cannot reach {server.hostname}:{server.port}: {exc}"
    return {**base, "status": status, "checked_at": models.to_rfc3339(checked_at), "message": message}


def check_status(ctx: Context, servers: list[Server]) -> list[dict[str, Any]]:
    """Probe every server concurrently (each with ``ssh.connection_timeout`` capped at 5 s); remember the outcome."""
    if not servers:
        return []
    timeout = min(ctx.settings.ssh.connection_timeout, 5.0)
    with ThreadPoolExecutor(max_workers=min(32, len(servers)), thread_name_prefix="probe") as pool:
        results = list(pool.map(lambda s: probe(s, timeout), servers))
    now = models.utcnow()
    for result in results:
        try:
            Server.update(last_status=result["status"], last_status_at=now).where(Server.id == result["server_id"]).execute()
        except models.DatabaseError as exc:
            log.warning("cannot record status of server %s: %s", result["server_name"], exc)
    return results


def test_server(ctx: Context, server_id: str) -> tuple[bool, dict[str, Any]]:
    """A real SSH login running ``true``: (ok, result)."""
    from remora.errors import RemoraError

    server = get_server(server_id)
    now = models.utcnow()
    try:
        from remora.executor import ssh as ssh_executor
        from remora.services.targets import target_for

        if server.auth_type == AuthType.LOCAL.value:
            result = {
                "status": "connection_successful",
                "latency_ms": 0.0,
                "host_key_fingerprint": "",
                "message": "local server",
                "hops": [{"name": server.name, "host": server.hostname, "port": 0, "ms": 0.0}],
            }
        else:
            outcome = ssh_executor.test_connection(target_for(server, ctx.settings, ctx.secrets), ctx.settings)
            result = {
                "status": "connection_successful",
                "latency_ms": round(float(outcome.get("latency_ms", 0.0)), 3),
                "host_key_fingerprint": outcome.get("host_key_fingerprint", ""),
                "hops": outcome.get("hops", []),
            }
        ok = True
    except ImportError:
        ok, result = False, {"status": "connection_failed", "error": "the SSH executor is not available in this build"}
    except (RemoraError, OSError) as exc:
        ok, result = False, {"status": "connection_failed", "error": str(exc), "code": getattr(exc, "code", "SSH_ERROR")}
    Server.update(
        last_test_at=now,
        last_test_ok=ok,
        last_test_message=result.get("error", "ok"),
        last_latency_ms=result.get("latency_ms"),
        host_key_fingerprint=result.get("host_key_fingerprint", server.host_key_fingerprint),
    ).where(Server.id == server.id).execute()
    return ok, result
