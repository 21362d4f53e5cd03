"""NetQueue bound to a non-loopback address refuses to start without a token and refuses clients without it.

The test binds to this machine's own non-loopback interface address (e.g.
eth0's) and connects to it from here: the kernel routes that locally, no
packet leaves the machine.  Without such an address only the decision
(``is_loopback``) and the constructor's refusal are checked.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import subprocess
import sys

import pytest

from remora.errors import ConfigError, QueueError
from remora.netaddr import is_loopback
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from tests.support.cluster import ROOT
from tests.support.waits import free_port, wait_for

SIOCGIFADDR = 0x8915


def own_non_loopback_ipv4() -> str | None:
    """An IPv4 address of one of this machine's interfaces that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not is_loopback(address):
                return address
    return None


def test_the_loopback_decision():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.2", "10.0.0.1", "example.org"))
    for host in ("0.0.0.0", "::", "192.0.2.2"):
        with pytest.raises(ConfigError, match="token"):
            QueueServer(host=host, port=0, persistence=False)


def test_a_real_non_loopback_bind_needs_a_token_and_refuses_clients_without_it(tmp_path):
    address = own_non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address (the decision is tested above)")
    port = free_port(address)
    env = {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "remora", "queue", "serve", "--host", address, "--port", str(port), "--data-dir", str(tmp_path / "q")]
    no_token = tmp_path / "no-token.toml"
    no_token.write_text('[queue]\ntoken = ""\n')  # explicitly no token: refused off loopback
    refused = subprocess.run(argv, env={**env, "REMORA_CONFIG": str(no_token)}, capture_output=True, timeout=30)
    assert refused.returncode == 78 and b"token" in refused.stderr, refused.stderr

    env["REMORA_QUEUE_TOKEN"] = "exposed-secret"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        addr = f"{address}:{port}"
        wait_for(lambda: QueueClient(addr, token="exposed-secret").ping() >= 0, 15, what="the exposed queue")
        for token in ("", "wrong"):
            with pytest.raises(QueueError) as err:
                QueueClient(addr, token=token).put("sneaky")
            assert err.value.code == "UNAUTHORIZED"
        with QueueClient(addr, token="exposed-secret") as c:
            assert c.put("allowed") is True and c.peek("sneaky") is None
    finally:
        proc.terminate()
        proc.wait(10)
