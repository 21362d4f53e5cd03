"""Secrets at rest: server passwords, private keys, passphrases and PEM files.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``).  The key comes from ``security.secret_key`` (any string;
stretched with SHA-256) or, when that is empty, from ``<data_dir>/secret.key``,
created on first use with mode 0600.  Every process that reads secrets (API,
workers) must share the same key: on several machines set
``REMORA_SECRET_KEY`` or copy the key file.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from remora.config import Settings
from remora.errors import SecretError

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"


def _derive(secret: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode("utf-8")).digest())


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file, creating it (0600, never overwriting) when missing."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the data directory: its owner's alone
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        log.info("created secret key file %s (mode 0600); back it up with the database", path)
        return key
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise SecretError(f"secret key file {path} is not a valid key") from None
    return key


class SecretBox:
    """Encrypts and decrypts secrets with one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.security.secret_key:
            return cls(_derive(settings.security.secret_key))
        return cls(load_or_create_key_file(settings.data_dir / KEY_FILE_NAME))

    def encrypt(self, value: str | bytes) -> bytes:
        data = value.encode("utf-8") if isinstance(value, str) else value
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes | memoryview) -> bytes:
        try:
            return self._fernet.decrypt(bytes(token))
        except InvalidToken:
            raise SecretError("cannot decrypt a stored secret: the secret key differs from the one it was stored with") from None

    def decrypt_str(self, token: bytes | memoryview) -> str:
        return self.decrypt(token).decode("utf-8")
