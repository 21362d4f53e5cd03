"""Where a job runs: the plain connection facts an executor needs, with no database behind them.

The worker builds a ``Target`` from a server's stored row (``remora.services.targets``:
secrets decrypted there, at run time), so the executors never see a model.
Secrets are plain text here and therefore kept out of ``repr``; a ``Target``
is never logged or stored.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

_FINGERPRINT_KEY = os.urandom(32)  # per process: a credential's fingerprint is no offline oracle for its secret


class AuthKind(str, enum.Enum):
    LOCAL = "local"  # no SSH: a subprocess of the worker
    PASSWORD = "password"
    KEY = "key"  # a private key (an uploaded PEM file is one too)


@dataclass
class Target:
    """A host to run on and how to log in (treat as immutable).

    ``jump``: the hosts to go through, first hop first (ProxyJump): the first is reached directly, each
    next one over a ``direct-tcpip`` channel of the one before, this target over the last.  The list is
    the whole route: a hop's own ``jump`` is ignored (``hop_route`` gives each hop its predecessors).
    """

    host: str
    port: int = 22
    user: str = ""
    auth: AuthKind = AuthKind.PASSWORD
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)  # PEM or OpenSSH text
    passphrase: str | None = field(default=None, repr=False)
    host_key_policy: str = "accept-new"  # accept-new | strict | off
    known_hosts: Path | None = None  # Remora's own known_hosts file
    jump: list[Target] = field(default_factory=list)
    name: str = ""  # how logs and errors name it (the server's name)

    def __post_init__(self) -> None:
        self.auth = AuthKind(self.auth)
        self.name = self.name or f"{self.user}@{self.host}:{self.port}"

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the credential (and the hops) in pool keys without holding a secret there."""
        h = hmac.new(_FINGERPRINT_KEY, digestmod=hashlib.sha256)
        for part in (self.auth.value, self.user, self.password, self.private_key, self.passphrase):
            h.update((part or "").encode())
            h.update(b"\0")
        for hop in self.jump:
            h.update(repr(hop.connection_key).encode())
        return h.hexdigest()[:24]

    @cached_property
    def hop_route(self) -> list[Target]:
        """The jump hosts, each with the hops before it as its own ``jump`` (so its pool key covers its route)."""
        return [dataclasses.replace(hop, jump=self.jump[:i]) for i, hop in enumerate(self.jump)]

    @property
    def connection_key(self) -> tuple[str, int, str, str]:
        """(host, port, user, credential fingerprint): connections with the same key are interchangeable."""
        return (self.host, int(self.port), self.user, self.fingerprint)
