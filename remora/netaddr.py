"""Is a bind address loopback?  One answer for the API, ``remora up`` and the queue.

A host name is resolved (``socket.getaddrinfo``) and counts as loopback only
when every address it resolves to is a loopback address (``ipaddress``):
``localhost`` is, ``127.example.com`` is not (it is a name, not 127.0.0.0/8).
The empty host, ``0.0.0.0`` and ``::`` (every interface) are not; a name that
does not resolve is not either.
"""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """True only if ``host`` (an address or a name) means loopback addresses and nothing else."""
    text = host.strip().strip("[]")
    if not text:
        return False
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    if not addresses:
        return False
    try:
        return all(ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses)
    except ValueError:
        return False


def no_auth_refusal(host: str) -> str | None:
    """The error for serving without tokens on ``host``, or None when ``host`` is loopback."""
    if is_loopback(host):
        return None
    shown = host or "0.0.0.0"
    return f"--no-auth (or api.auth = false) is accepted only on a loopback address, not {shown}"
