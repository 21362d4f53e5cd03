"""Uploaded private keys (PEM files): validated with ``cryptography``, stored encrypted, never returned."""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.hazmat.primitives import serialization

from remora import models
from remora.errors import Conflict, NotFound, PayloadTooLarge, ValidationError
from remora.models import PemKey, Server
from remora.services.context import Context

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.(pem|key)$")
ALLOWED_SUFFIXES = (".pem", ".key")


class PathTraversal(ValidationError):
    code = "PATH_TRAVERSAL"


def check_filename(name: str) -> str:
    """A safe stored name for an uploaded key; ``../`` and friends are refused (400)."""
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise PathTraversal(
            f"invalid file name {name[:100]!r}: path components are not allowed", details={"filename": "must be a plain file name"}
        )
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise ValidationError("only .pem and .key files are accepted", details={"filename": "must end in .pem or .key"})
    if not NAME_RE.match(name):
        raise ValidationError(
            f"invalid file name {name[:100]!r}",
            details={"filename": "letters, digits, '.', '_' and '-' only, starting with a letter or digit"},
        )
    return name


def _fingerprint(key: object) -> tuple[str, str]:
    public = key.public_key()  # type: ignore[attr-defined]
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kind, blob = line.split()[:2]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return kind.decode(), "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def inspect_private_key(data: bytes, passphrase: bytes | None = None) -> tuple[str, str]:
    """(key type, SHA256 fingerprint) of a PEM/OpenSSH private key; ValidationError when it is not one.

    An encrypted key without its passphrase is accepted with an empty fingerprint.
    """
    if len(data) > 1024 * 1024 or b"PRIVATE KEY" not in data:
        raise ValidationError("not a private key (expected a PEM or OpenSSH private key)", details={"pem_file": "must be a private key"})
    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    encrypted = False
    for loader in loaders:
        try:
            key = loader(data, password=passphrase)
            return _fingerprint(key)
        except TypeError:  # encrypted and no (or an unneeded) passphrase
            encrypted = True
        except (ValueError, IndexError, AttributeError):
            continue
        except Exception:  # noqa: BLE001 - a malformed key must be a 400, whatever the parser raises
            continue
    if encrypted:
        return "encrypted", ""
    raise ValidationError("not a valid private key", details={"pem_file": "must be a private key (PEM or OpenSSH format)"})


def store_pem(ctx: Context, filename: str, data: bytes, actor: str) -> PemKey:
    """Validate and store an uploaded key, encrypted. 409 when the name exists."""
    name = check_filename(filename)
    if len(data) > ctx.settings.security.max_upload_size:
        raise PayloadTooLarge(f"file exceeds the limit of {ctx.settings.security.max_upload_size} bytes")
    if not data:
        raise ValidationError("empty file", details={"pem_file": "must not be empty"})
    key_type, fingerprint = inspect_private_key(data)
    try:
        with models.write_transaction():
            if PemKey.select().where(PemKey.filename == name).exists():
                raise Conflict(f"a key named {name} exists; delete it first", details={"filename": "already exists"})
            return PemKey.create(
                filename=name,
                content=ctx.secrets.encrypt(data),
                size=len(data),
                fingerprint=fingerprint,
                key_type=key_type,
                uploaded_by=actor,
            )
    except models.IntegrityError:
        raise Conflict(f"a key named {name} exists", details={"filename": "already exists"}) from None


def list_pem() -> list[PemKey]:
    return list(
        PemKey.select(PemKey.filename, PemKey.size, PemKey.fingerprint, PemKey.key_type, PemKey.uploaded_at, PemKey.uploaded_by).order_by(
            PemKey.filename
        )
    )


def delete_pem(filename: str) -> None:
    """Delete an uploaded key; 400 for a path, 404 unknown, 409 while a server uses it."""
    if "/" in filename or "\\" in filename or ".." in filename:
        raise PathTraversal("path components are not allowed", details={"filename": "must be a plain file name"})
    key = PemKey.get_or_none(PemKey.filename == filename)
    if key is None:
        raise NotFound(f"no key named {filename[:100]}")
    users = [s.name for s in Server.select(Server.name).where(Server.pem_file == filename)]
    if users:
        raise Conflict(f"key {filename} is used by server(s) {', '.join(users[:10])}", details={"servers": users})
    PemKey.delete().where(PemKey.id == key.id).execute()
