"""Inventory import: many servers from one ssh_config / Ansible / CSV text, in one transaction.

Each host becomes the same server body ``POST /servers`` takes and goes
through the same checks (the caller's ``check`` for the request schema and
key, then the auth rules of ``remora.services.servers``).  A name that
exists is updated (its tags gain the imported ones; nothing else it has is
dropped), never duplicated.  A host that fails a check is skipped with the
reason; the others are written together or not at all.

Key files are paths on the client: this module never opens one.  A host
that names one gets its key only from ``keys`` (host name -> private key
text, which the CLI fills by reading the files); without it the host is
skipped.

A host's ``jump_server`` (ssh_config ``ProxyJump``, Ansible ``-J`` in
``ansible_ssh_common_args``, the CSV column) names another host of the same
inventory or an existing server; hosts are written jump hosts first.  A host
whose jump host is unknown, skipped, or part of a loop is skipped with the
reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remora import inventory, models
from remora.errors import Conflict, ValidationError
from remora.models import Server
from remora.services.context import Context
from remora.services.servers import LOCAL_SERVER, _apply, _check_auth, _check_jump, find_server, forget_servers

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "skipped": self.skipped, "dry_run": self.dry_run}


def needs_key_reason(host: inventory.Host) -> str:
    return (
        f"needs a key: the key file {host.identity_file!r} is a path on the client and the API never reads paths "
        "(import with `remora servers import`, which reads key files and sends the keys)"
    )


def import_servers(
    ctx: Context,
    fmt: str,
    content: str,
    *,
    tags: list[str] | None = None,
    keys: dict[str, str] | None = None,
    dry_run: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> ImportResult:
    """Create or update every host of the inventory (nothing is written with ``dry_run``).

    ``check`` validates one server body as the create route does (raising
    ``ValidationError``); ``keys`` maps host names to private keys.
    """
    hosts = inventory.parse(fmt, content)
    keys = keys or {}
    result = ImportResult(dry_run=dry_run)
    bodies: list[dict[str, Any]] = []
    for host in hosts:
        if host.skip:
            result.skipped.append({"name": host.name, "reason": host.skip})
            continue
        if host.name == LOCAL_SERVER:
            result.skipped.append({"name": host.name, "reason": "the built-in local server is not imported"})
            continue
        key = keys.get(host.name)
        if host.identity_file and not key:
            result.skipped.append({"name": host.name, "reason": needs_key_reason(host)})
            continue
        body = host.server_body(list(tags or []), key)
        try:
            if check is not None:
                check(body)
        except ValidationError as exc:
            result.skipped.append({"name": host.name, "reason": exc.message})
            continue
        bodies.append(body)
    bodies = _jumps_first(bodies, result)
    try:
        with models.write_transaction():
            existing = _existing([b["name"] for b in bodies])
            written: set[str] = set()
            importing = {b["name"] for b in bodies}
            for body in bodies:
                jump = body.get("jump_server")
                if jump in importing and jump not in written:
                    result.skipped.append({"name": body["name"], "reason": f"jump server {jump} was skipped"})
                    continue
                server = existing.get(body["name"])
                if server is not None:
                    body["tags"] = list(dict.fromkeys([*(server.tags or []), *body["tags"]]))
                try:
                    _check_auth(body, server)
                except ValidationError as exc:
                    result.skipped.append({"name": body["name"], "reason": exc.message})
                    continue
                fresh = server is None
                if server is None:
                    server = Server(id=models.new_id())
                _apply(ctx, server, body)
                if jump and not (dry_run and jump in importing):  # in a dry run the jump host is not in the table
                    try:
                        _check_jump(body, server)
                    except ValidationError as exc:
                        result.skipped.append({"name": body["name"], "reason": exc.message})
                        continue
                if fresh:
                    if not dry_run:
                        server.save(force_insert=True)
                    result.created.append(body["name"])
                else:
                    server.updated_at = models.utcnow()
                    if not dry_run:
                        server.save()
                    result.updated.append(body["name"])
                written.add(body["name"])
    except models.IntegrityError:
        raise Conflict("a server was created with one of these names meanwhile; import again", details={"name": "conflict"}) from None
    finally:
        forget_servers()
    log.info(
        "inventory import (%s%s): %d created, %d updated, %d skipped",
        inventory.normalize_format(fmt), ", dry run" if dry_run else "", len(result.created), len(result.updated), len(result.skipped),
    )  # fmt: skip
    return result


def _jumps_first(bodies: list[dict[str, Any]], result: ImportResult) -> list[dict[str, Any]]:
    """The bodies ordered so a jump host comes before the hosts behind it; hosts whose jump is unknown or loops are skipped."""
    by_name = {b["name"]: b for b in bodies}
    ordered: list[dict[str, Any]] = []
    state: dict[str, str] = {}  # name -> "done" | "skipped"
    reasons: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> bool:
        if state.get(name) in ("done", "skipped"):
            return state[name] == "done"
        body = by_name[name]
        jump: str | None = body.get("jump_server")
        reason = None
        if jump is None:
            pass
        elif jump in path:
            reason = f"jump server loop: {' -> '.join([*path[path.index(jump) :], name, jump])}"
        elif jump in by_name:
            if not visit(jump, [*path, name]):
                loop = reasons.get(jump, "")
                reason = loop if loop.startswith("jump server loop") else f"jump server {jump} was skipped"
        elif find_server(jump) is None:
            reason = f"ProxyJump {jump}: no host {jump} in this inventory and no server named {jump}"
        if state.get(name) == "skipped":  # skipped as part of a loop found deeper
            return False
        if reason:
            state[name] = "skipped"
            reasons[name] = reason
            result.skipped.append({"name": name, "reason": reason})
            return False
        state[name] = "done"
        ordered.append(body)
        return True

    for body in bodies:
        visit(body["name"], [])
    return ordered


def _existing(names: list[str]) -> dict[str, Server]:
    found: dict[str, Server] = {}
    for start in range(0, len(names), 500):  # SQLite caps bound parameters per statement
        for server in Server.select().where(Server.name.in_(names[start : start + 500])):
            found[server.name] = server
    return found
