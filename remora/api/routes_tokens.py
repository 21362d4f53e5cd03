"""Token routes: list, create (the token shown once), revoke -- admin only, create and revoke audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora.api.http import Request
from remora.api.router import Route
from remora.api.schema import TIMESTAMP, UUID, array, obj
from remora.auth import ROLE_RANK
from remora.config import Settings
from remora.services import tokens

if TYPE_CHECKING:
    from remora.api.app import App

ROLES = sorted(ROLE_RANK, key=ROLE_RANK.__getitem__)
CREATE_BODY = obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 128, "description": "Who or what uses it; unique; no '/'."},
        "role": {"type": "string", "enum": ROLES},
        "expires_in": {
            "type": ["number", "string", "null"],
            "maxLength": 32,
            "description": "Lifetime: seconds or a duration such as 30d, 12h (at most 100 years). Absent or null: never expires.",
        },
    },
    ["name", "role"],
)
TOKEN = obj(
    {
        "id": UUID,
        "name": {"type": "string"},
        "role": {"type": "string", "enum": ROLES},
        "prefix": {"type": "string", "description": "The token's first characters, to tell tokens apart."},
        "created_at": TIMESTAMP,
        "last_used_at": TIMESTAMP,
        "expires_at": TIMESTAMP,
        "revoked": {"type": "boolean"},
    },
    ["id", "name", "role", "created_at", "last_used_at", "expires_at"],
    closed=False,
)
CREATED = obj(
    {**TOKEN["properties"], "token": {"type": "string", "description": "The token itself: shown in this answer only, never again."}},
    [*TOKEN["required"], "token"],
    closed=False,
)


def list_tokens(app: App, req: Request) -> dict[str, Any]:
    """Every token (revoked ones too, marked), oldest first; never a token or its hash."""
    return {"tokens": tokens.list_tokens()}


def create_token(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    seconds = tokens.parse_lifetime(body.get("expires_in"))
    info, plaintext = tokens.issue_token(body["name"], body["role"], seconds)
    req.audit_target = ("token", str(info["id"]))
    req.audit_details = {"name": info["name"], "role": info["role"], "expires_at": info["expires_at"]}
    return {**info, "token": plaintext}


def revoke_token(app: App, req: Request) -> dict[str, Any]:
    info = tokens.revoke_token(req.path_params["id"])
    req.audit_target = ("token", str(info["id"]))
    req.audit_details = {"name": info["name"], "role": info["role"]}
    return info


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/tokens"
    common: dict[str, Any] = {"tag": "tokens", "resource": "token"}
    return [
        Route(
            "GET",
            base,
            list_tokens,
            "admin",
            "List API tokens (names, roles, prefixes, times; never a token)",
            response=obj({"tokens": array(TOKEN)}, ["tokens"], closed=False),
            **common,
        ),
        Route(
            "POST",
            base,
            create_token,
            "admin",
            "Create an API token; the answer is the only time the token is shown",
            body=CREATE_BODY,
            response=CREATED,
            status=201,
            errors=(400, 409),
            **common,
        ),
        Route(
            "DELETE",
            base + "/{id:str}",
            revoke_token,
            "admin",
            "Revoke an API token by id or name (refused at once on this API, within seconds on others)",
            response=TOKEN,
            errors=(404,),
            **common,
        ),
    ]
