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
from remora.services.servers import LOCAL_SERVER, _apply, _check_auth, forget_servers

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
    try:
        with models.write_transaction():
            existing = _existing([b["name"] for b in bodies])
            for body in bodies:
                server = existing.get(body["name"])
                if server is not None:
                    body["tags"] = list(dict.fromkeys([*(server.tags or []), *body["tags"]]))
                try:
                    _check_auth(body, server)
                except ValidationError as exc:
                    result.skipped.append({"name": body["name"], "reason": exc.message})
                    continue
                if server is None:
                    server = Server(id=models.new_id())
                    _apply(ctx, server, body)
                    if not dry_run:
                        server.save(force_insert=True)
                    result.created.append(body["name"])
                else:
                    _apply(ctx, server, body)
                    server.updated_at = models.utcnow()
                    if not dry_run:
                        server.save()
                    result.updated.append(body["name"])
    except models.IntegrityError:
        raise Conflict("a server was created with one of these names meanwhile; import again", details={"name": "conflict"}) from None
    finally:
        forget_servers()
    log.info(
        "inventory import (%s%s): %d created, %d updated, %d skipped",
        inventory.normalize_format(fmt), ", dry run" if dry_run else "", len(result.created), len(result.updated), len(result.skipped),
    )  # fmt: skip
    return result


def _existing(names: list[str]) -> dict[str, Server]:
    found: dict[str, Server] = {}
    for start in range(0, len(names), 500):  # SQLite caps bound parameters per statement
        for server in Server.select().where(Server.name.in_(names[start : start + 500])):
            found[server.name] = server
    return found
