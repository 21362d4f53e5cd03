"""Server routes: CRUD, SSH test, reachability (one and all)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora import services
from remora.api import schema
from remora.api.http import Request, Response, dumps
from remora.api.router import Param, Route
from remora.api.schema import NULLABLE_STR, TIMESTAMP, UUID, array, obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.inventory import FORMAT_ALIASES
from remora.services import files
from remora.services.inventory import import_servers
from remora.services.servers import list_servers

if TYPE_CHECKING:
    from remora.api.app import App

SECRET = {"type": ["string", "null"], "maxLength": 65536}
SERVER_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\s/]+$"},
    "hostname": {"type": "string", "maxLength": 255},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "user": {"type": "string", "maxLength": 255},
    "auth_type": {"type": "string", "enum": ["password", "key", "pem", "local"]},
    "password": SECRET,
    "private_key": SECRET,
    "passphrase": SECRET,
    "pem_file": {"type": ["string", "null"], "maxLength": 255},
    "host_key_policy": {"type": ["string", "null"], "enum": ["accept-new", "strict", "off", None]},
    "jump_server": {"type": ["string", "null"], "maxLength": 255},
    "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}, "maxItems": 100},
    "max_concurrent_jobs": {"type": "integer", "minimum": 0, "maximum": 10000},
    "is_active": {"type": "boolean"},
    "description": {"type": "string", "maxLength": 4096},
}
CREATE_BODY = obj(SERVER_FIELDS, ["name"])
UPDATE_BODY = obj(SERVER_FIELDS)
SERVER = obj(
    {
        "id": UUID,
        "name": {"type": "string"},
        "hostname": {"type": "string"},
        "port": {"type": "integer"},
        "user": {"type": "string"},
        "auth_type": {"type": "string"},
        "has_password": {"type": "boolean"},
        "has_private_key": {"type": "boolean"},
        "pem_file": NULLABLE_STR,
        "tags": array({"type": "string"}),
        "is_active": {"type": "boolean"},
        "created_at": TIMESTAMP,
    },
    closed=False,
)
STATUS = obj(
    {
        "status": {"type": "string", "enum": ["connected", "disconnected"]},
        "server_id": UUID,
        "server_name": {"type": "string"},
        "hostname": {"type": "string"},
        "port": {"type": "integer"},
        "checked_at": TIMESTAMP,
        "message": {"type": "string"},
    },
    closed=False,
)
BULK = obj(
    {"servers": array(STATUS), "connected": {"type": "integer"}, "disconnected": {"type": "integer"}, "total_servers": {"type": "integer"}},
    closed=False,
)
IMPORT_BODY = obj(
    {
        "format": {"type": "string", "enum": sorted(FORMAT_ALIASES)},
        "content": {"type": "string", "maxLength": 8 * 1024 * 1024},
        "tags": SERVER_FIELDS["tags"],
        "dry_run": {"type": "boolean"},
        "keys": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 65536}, "maxProperties": 10000},
    },
    ["format", "content"],
)
IMPORTED = obj(
    {
        "created": array({"type": "string"}),
        "updated": array({"type": "string"}),
        "skipped": array(obj({"name": {"type": "string"}, "reason": {"type": "string"}})),
        "dry_run": {"type": "boolean"},
    }
)
HOP = obj({"name": {"type": "string"}, "host": {"type": "string"}, "port": {"type": "integer"}, "ms": {"type": "number"}}, closed=False)
TEST = obj(
    {"status": {"type": "string"}, "latency_ms": {"type": "number"}, "host_key_fingerprint": {"type": "string"}, "hops": array(HOP)},
    closed=False,
)


def _check_key(body: dict[str, Any]) -> None:
    if body.get("private_key"):
        passphrase = body.get("passphrase")
        try:
            files.inspect_private_key(body["private_key"].encode("utf-8"), passphrase.encode("utf-8") if passphrase else None)
        except ValidationError:
            raise ValidationError(
                "private_key is not a valid private key", details={"private_key": "must be a PEM or OpenSSH private key"}
            ) from None


def create_server(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    _check_key(body)
    server = services.create_server(app.ctx, body)
    req.audit_target = ("server", server.id)
    req.audit_details = {"name": server.name}
    return services.server_dict(server)


def import_inventory(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    checked_keys: dict[str, str | None] = {}  # key text -> problem (an inventory often shares one key)

    def check(server: dict[str, Any]) -> None:
        schema.validate(CREATE_BODY, server)
        key = server.get("private_key")
        if key:
            if key not in checked_keys:
                try:
                    _check_key(server)
                    checked_keys[key] = None
                except ValidationError as exc:
                    checked_keys[key] = exc.message
            if checked_keys[key]:
                raise ValidationError(str(checked_keys[key]))

    result = import_servers(
        app.ctx, body["format"], body["content"], tags=body.get("tags"), keys=body.get("keys"),
        dry_run=bool(body.get("dry_run")), check=check,
    )  # fmt: skip
    req.audit_details = {"format": body["format"], "created": len(result.created), "updated": len(result.updated),
                         "skipped": len(result.skipped), "dry_run": result.dry_run}  # fmt: skip
    return result.as_dict()


def _bool_arg(req: Request, name: str) -> bool | None:
    raw = req.arg(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError(f"{name} must be true or false", details={name: "must be true or false"})


def get_servers(app: App, req: Request) -> dict[str, Any]:
    servers = list_servers(_bool_arg(req, "active"), req.arg("tag") or None)
    return {"servers": [services.server_dict(s) for s in servers]}


def get_server(app: App, req: Request) -> dict[str, Any]:
    return services.server_dict(services.get_server(req.path_params["id"]))


def update_server(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    _check_key(body)
    server = services.update_server(app.ctx, req.path_params["id"], body)
    req.audit_details = {"fields": sorted(body)}
    return services.server_dict(server)


def delete_server(app: App, req: Request) -> dict[str, Any]:
    deleted = services.delete_server(req.path_params["id"], force=bool(_bool_arg(req, "force")))
    return {"deleted_jobs": deleted, "message": "server deleted"}


def test_server(app: App, req: Request) -> Response | dict[str, Any]:
    ok, result = services.test_server(app.ctx, req.path_params["id"])
    if ok:
        return result
    body = {**result, "code": result.get("code", "SSH_ERROR"), "details": {"server_id": req.path_params["id"]}}
    return Response(status=503, body=dumps(body)).header("Retry-After", "5")


def server_status(app: App, req: Request) -> dict[str, Any]:
    server = services.get_server(req.path_params["id"])
    return services.check_status(app.ctx, [server])[0]


def bulk_status(app: App, req: Request) -> dict[str, Any]:
    results = services.check_status(app.ctx, list_servers(active=True))
    connected = sum(1 for r in results if r["status"] == "connected")
    return {"servers": results, "connected": connected, "disconnected": len(results) - connected, "total_servers": len(results)}


def probe_routes(path: str, handler: Any, summary: str, response: dict[str, Any], **kw: Any) -> list[Route]:
    """A read-only probe offered on GET and on POST (the seed's clients POST); the POST one is named ``<handler>_post``."""
    return [
        Route(method, path, handler, "viewer", summary, response=response, mutating=False, name=name, **kw)
        for method, name in (("GET", ""), ("POST", f"{handler.__name__}_post"))
    ]


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/servers"
    one = base + "/{id:uuid}"
    common: dict[str, Any] = {"tag": "servers", "resource": "server"}
    list_params = [
        Param("active", {"type": "string", "enum": ["true", "false"]}, "Only active / inactive servers."),
        Param("tag", {"type": "string"}, "Only servers with this tag."),
    ]
    return [
        Route(
            "POST",
            base,
            create_server,
            "admin",
            "Create a server (secrets stored encrypted)",
            body=CREATE_BODY,
            response=SERVER,
            status=201,
            errors=(400, 409),
            **common,
        ),
        Route(
            "GET",
            base,
            get_servers,
            "viewer",
            "List servers",
            response=obj({"servers": array(SERVER)}, closed=False),
            query=list_params,
            errors=(400,),
            **common,
        ),
        Route(
            "POST",
            base + "/import",
            import_inventory,
            "admin",
            "Create or update many servers from an ssh_config, Ansible (INI or YAML) or CSV inventory, in one transaction",
            body=IMPORT_BODY,
            response=IMPORTED,
            errors=(400, 409, 413),
            max_body=16 * 1024 * 1024,
            **common,
        ),
        Route("GET", one, get_server, "viewer", "A server", response=SERVER, errors=(404,), **common),
        Route(
            "PUT",
            one,
            update_server,
            "admin",
            "Update a server (partial)",
            body=UPDATE_BODY,
            response=SERVER,
            errors=(400, 404, 409),
            **common,
        ),
        Route(
            "DELETE",
            one,
            delete_server,
            "admin",
            "Delete a server (force=true also deletes its finished jobs)",
            response=obj({"deleted_jobs": {"type": "integer"}, "message": {"type": "string"}}),
            query=[Param("force", {"type": "string", "enum": ["true", "false"]}, "Delete the server's job history too.")],
            errors=(404, 409),
            **common,
        ),
        Route("POST", one + "/test", test_server, "operator", "Log in over SSH and run `true`", response=TEST, errors=(404, 503), **common),
        *probe_routes(one + "/status", server_status, "TCP reachability of a server", STATUS, errors=(404,), **common),
        *probe_routes(base + "/bulk/status", bulk_status, "Reachability of every active server (probed concurrently)", BULK, **common),
        Route(
            "GET",
            base + "/status/all",
            bulk_status,
            "viewer",
            "Reachability of every active server (alias)",
            response=BULK,
            mutating=False,
            name="bulk_status_all",
            **common,
        ),
    ]
