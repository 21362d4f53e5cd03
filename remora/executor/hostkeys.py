"""Remora's own known_hosts: host-key pinning with policy accept-new | strict | off.

The file uses OpenSSH's format (``host keytype base64``, ``[host]:port`` for
ports other than 22; hashed ``|1|salt|hash`` entries are understood), so
``ssh-keygen -F`` and ``ssh-keygen -R -f`` work on it.  Remora never writes
the user's ``~/.ssh/known_hosts``.

Policies:
- ``accept-new`` (default): a host seen for the first time is pinned; a host
  already pinned must present one of its pinned keys;
- ``strict``: the host must already be in the file;
- ``off``: no checking at all (logged as insecure, once per host).

A host that is pinned but presents another key -- whatever its type -- is
refused with ``HostKeyError`` naming the pinned and the presented
fingerprints, the way OpenSSH does.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from remora.errors import ConfigError, HostKeyError

log = logging.getLogger(__name__)

POLICIES = ("accept-new", "strict", "off")


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob: ``SHA256:base64-without-padding``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class Entry:
    patterns: str
    key_type: str
    blob: bytes

    def matches(self, name: str) -> bool:
        if self.patterns.startswith("|1|"):
            try:
                _, _, salt, digest = self.patterns.split("|", 3)
                mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
                return hmac.compare_digest(mac, base64.b64decode(digest))
            except (ValueError, TypeError):
                return False
        return name in self.patterns.split(",")


def _parse(text: str) -> list[Entry]:
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("@"):
            continue
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            entries.append(Entry(parts[0], parts[1], base64.b64decode(parts[2])))
        except ValueError:
            continue
    return entries


class _Table:
    """A file's entries, indexed: plain entries by each host name of their patterns; hashed ones apart (each needs its HMAC)."""

    def __init__(self, entries: list[Entry]) -> None:
        self.by_name: dict[str, list[Entry]] = {}
        self.hashed: list[Entry] = []
        for entry in entries:
            self.put(entry)

    def put(self, entry: Entry) -> None:
        if entry.patterns.startswith("|1|"):
            self.hashed.append(entry)
        else:
            for name in entry.patterns.split(","):
                self.by_name.setdefault(name, []).append(entry)

    def lookup(self, name: str) -> list[Entry]:
        return self.by_name.get(name, []) + [e for e in self.hashed if e.matches(name)]


class KnownHosts:
    """Thread- and process-safe access to one known_hosts file.

    The parsed file is kept with the size and mtime it was read at, and re-read only when another
    process changed it: what this process appends is added to the table as it is written, so pinning
    N new hosts reads the file once, not N times.
    """

    _warned_off: set[str] = set()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[int, int, _Table] | None = None  # (st_mtime_ns, st_size, table) of the file as read

    def _table(self, st: os.stat_result, read: Callable[[], str]) -> _Table:
        cached = self._cache
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        table = _Table(_parse(read()))
        self._cache = (st.st_mtime_ns, st.st_size, table)
        return table

    def lookup(self, host: str, port: int) -> list[Entry]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        with self._lock:
            return self._table(st, lambda: self.path.read_text(errors="replace")).lookup(host_pattern(host, port))

    def add(self, host: str, port: int, key_type: str, blob: bytes) -> None:
        """Append an entry (under an exclusive file lock; skipped if another process just added it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        name = host_pattern(host, port)
        line = f"{name} {key_type} {base64.b64encode(blob).decode()}\n"
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)

                def read() -> str:
                    with open(fd, closefd=False, errors="replace") as fh:
                        return fh.read()

                table = self._table(os.fstat(fd), read)
                if any(e.blob == blob for e in table.lookup(name)):
                    return
                os.write(fd, line.encode())
                table.put(Entry(name, key_type, blob))
                st = os.fstat(fd)
                self._cache = (st.st_mtime_ns, st.st_size, table)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def verify(self, host: str, port: int, key_type: str, blob: bytes, policy: str) -> str:
        """Check a presented host key under ``policy``; return its fingerprint or raise HostKeyError."""
        if policy not in POLICIES:
            raise ConfigError(f"host key policy {policy!r}: expected one of {', '.join(POLICIES)}")
        presented = fingerprint(blob)
        name = host_pattern(host, port)
        if policy == "off":
            if name not in self._warned_off:
                self._warned_off.add(name)
                log.warning("host key checking is OFF for %s (insecure): presented %s %s", name, key_type, presented)
            return presented
        known = self.lookup(host, port)
        if any(e.blob == blob for e in known):
            return presented
        if known:
            pinned = ", ".join(f"{e.key_type} {fingerprint(e.blob)}" for e in known)
            raise HostKeyError(
                f"host key for {name} CHANGED: pinned {pinned}, presented {key_type} {presented}; "
                f"refusing to connect (if the change is expected, remove the old entry from {self.path})",
                details={"host": name, "pinned": [fingerprint(e.blob) for e in known], "presented": presented},
            )
        if policy == "strict":
            raise HostKeyError(
                f"host key for {name} is unknown (policy strict): presented {key_type} {presented}; add it to {self.path}",
                details={"host": name, "presented": presented},
            )
        self.add(host, port, key_type, blob)
        log.info("pinned new host key for %s: %s %s", name, key_type, presented)
        return presented
