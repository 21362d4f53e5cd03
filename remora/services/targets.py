"""A stored server -> the executor's ``Target``: the one place a server's secrets are decrypted to connect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from remora.errors import SSHAuthError, SSHError, ValidationError
from remora.executor.target import AuthKind, Target
from remora.models import AuthType, PemKey, Server

if TYPE_CHECKING:
    from remora.config import Settings
    from remora.crypto import SecretBox


def target_for(server: Server, settings: Settings, secrets: SecretBox) -> Target:
    """The server's connection facts with its credential decrypted (an uploaded PEM file read from its row).

    A server with a ``jump_server`` gets its chain of jump hosts (``Target.jump``, first hop first;
    a loop or a local hop, which the API refuses, raises ``SSHError`` here too).
    Raises ``SSHAuthError`` when the server names a PEM file that is not stored, ``SecretError`` when a
    secret cannot be decrypted.  A missing password or key is left to the executor to report.
    """
    target = _single(server, settings, secrets)
    if server.jump_server_id:
        from remora.services.servers import jump_chain

        try:
            chain = jump_chain(server)
        except ValidationError as exc:
            raise SSHError(f"server {server.name}: {exc.message}") from None
        for hop in chain:
            if hop.auth_type == AuthType.LOCAL.value:
                raise SSHError(f"server {server.name}: jump server {hop.name} is local")
        target.jump = [_single(hop, settings, secrets) for hop in chain]
    return target


def _single(server: Server, settings: Settings, secrets: SecretBox) -> Target:
    auth = server.auth_type
    key: bytes | memoryview | None = server.private_key
    if auth == AuthType.PEM.value:
        pem = PemKey.get_or_none(PemKey.filename == server.pem_file)
        if pem is None:
            raise SSHAuthError(f"server {server.name}: PEM key {server.pem_file!r} not found")
        key = pem.content
    kind = {AuthType.LOCAL.value: AuthKind.LOCAL, AuthType.PASSWORD.value: AuthKind.PASSWORD}.get(auth, AuthKind.KEY)
    if auth not in {t.value for t in AuthType}:
        raise SSHAuthError(f"server {server.name}: auth type {auth!r} is not an SSH auth type")
    return Target(
        host=server.hostname,
        port=int(server.port or 0),
        user=server.user or "",
        auth=kind,
        password=_plain(secrets, server.password) if kind is AuthKind.PASSWORD else None,
        private_key=_plain(secrets, key) if kind is AuthKind.KEY else None,
        passphrase=_plain(secrets, server.passphrase) if kind is AuthKind.KEY else None,
        host_key_policy=server.host_key_policy or settings.ssh.host_key_policy,
        known_hosts=settings.known_hosts_path,
        name=server.name,
    )


def _plain(secrets: SecretBox, value: bytes | memoryview | None) -> str | None:
    return secrets.decrypt_str(value) if value else None
