"""PEM key routes: upload (multipart), list, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora.api import multipart
from remora.api.http import Request
from remora.api.router import Route
from remora.api.schema import array, obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.services import files, render

if TYPE_CHECKING:
    from remora.api.app import App

UPLOAD_OVERHEAD = 64 * 1024
PEM = obj(
    {
        "filename": {"type": "string"},
        "size": {"type": "integer"},
        "fingerprint": {"type": "string"},
        "uploaded_at": {"type": ["string", "null"]},
    },
    closed=False,
)
UPLOAD_RESULT = obj({"filename": {"type": "string"}, "pem_file_url": {"type": "string"}, "message": {"type": "string"}}, closed=False)
MULTIPART = {"type": "object", "properties": {"pem_file": {"type": "string", "format": "binary"}}, "required": ["pem_file"]}


def upload_pem(app: App, req: Request) -> dict[str, Any]:
    parts = multipart.parse(req.header("Content-Type") or "", req.body())
    part = parts.get("pem_file")
    if part is None:
        raise ValidationError("missing multipart field pem_file", details={"pem_file": "is required"})
    if not part.filename:
        raise ValidationError("pem_file has no file name", details={"pem_file": "must be a file with a name"})
    key = files.store_pem(app.ctx, part.filename, part.data, req.identity.name if req.identity else "anonymous")
    req.audit_target = ("pem", key.filename)
    return {
        "filename": key.filename,
        "pem_file_url": f"/api/v1/files/pem/{key.filename}",
        "fingerprint": key.fingerprint,
        "key_type": key.key_type,
        "size": key.size,
        "message": "key uploaded and stored encrypted",
    }


def list_pem(app: App, req: Request) -> dict[str, Any]:
    return {"files": [render.pem_dict(key) for key in files.list_pem()]}


def delete_pem(app: App, req: Request) -> dict[str, Any]:
    name = req.path_params["filename"]
    files.delete_pem(name)
    req.audit_target = ("pem", name)
    return {"filename": name, "message": "key deleted"}


def routes(settings: Settings) -> list[Route]:
    limit = settings.security.max_upload_size + UPLOAD_OVERHEAD
    common: dict[str, Any] = {"tag": "files", "resource": "file"}
    upload = {"multipart": MULTIPART, "response": UPLOAD_RESULT, "status": 201, "max_body": limit, "errors": (400, 409, 413)}
    return [
        Route("POST", "/api/v1/upload/pem", upload_pem, "admin", "Upload a private key (multipart field pem_file)", **upload, **common),
        Route(
            "POST",
            "/api/v1/pem-files/upload",
            upload_pem,
            "admin",
            "Upload a private key (alias)",
            name="upload_pem_alias",
            **upload,
            **common,
        ),
        Route(
            "GET",
            "/api/v1/files/pem",
            list_pem,
            "viewer",
            "Uploaded keys (never their content)",
            response=obj({"files": array(PEM)}, closed=False),
            **common,
        ),
        Route(
            "DELETE",
            "/api/v1/files/pem/{filename:str}",
            delete_pem,
            "admin",
            "Delete an uploaded key",
            response=obj({"filename": {"type": "string"}, "message": {"type": "string"}}, closed=False),
            errors=(400, 404, 409),
            **common,
        ),
    ]
