"""SSH authentication (password, keys with passphrases, uploaded PEM) and host-key policies."""

from __future__ import annotations

import subprocess
import threading

import pytest

from remora.crypto import SecretBox
from remora.errors import HostKeyError, SSHAuthError, SSHError
from remora.executor.base import BufferSink, ExecRequest
from remora.executor.ssh import SSHExecutor, test_connection
from remora.executor.sshpool import SSHPool
from remora.models import AuthType, PemKey
from remora.services.targets import target_for
from tests.support.workerkit import add_server, init_db, make_settings

pytestmark = pytest.mark.ssh


@pytest.fixture
def settings(tmp_path):
    init_db(tmp_path)
    return make_settings(tmp_path)


@pytest.fixture
def box(settings):
    return SecretBox.from_settings(settings)


@pytest.fixture
def pool():
    p = SSHPool()
    yield p
    p.close()


def authorize(sshd, tmp_path, kind: str, passphrase: str = "", fmt: str | None = None) -> str:
    path = tmp_path / f"id_{kind}_{fmt or 'openssh'}"
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path), "-C", "remora-test"]
    if fmt:
        cmd += ["-m", fmt]
    subprocess.run(cmd, check=True)
    with open(sshd.workdir / "authorized_keys", "a") as fh:
        fh.write((tmp_path / f"{path.name}.pub").read_text())
    return path.read_text()


def stored(server, settings, box, pool) -> SSHExecutor:
    """The executor the worker builds for a stored server: its secrets decrypted into a Target."""
    return SSHExecutor(target_for(server, settings, box), settings, pool=pool)


def probe_server(server, settings, box) -> dict:
    return test_connection(target_for(server, settings, box), settings)


def echo(ex: SSHExecutor) -> tuple:
    sink = BufferSink()
    res = ex.run(ExecRequest(command="id -un"), sink, threading.Event())
    return res, bytes(sink.stdout).decode().strip()


def test_password_auth(sshd, settings, box, pool):
    if not sshd.password_user:
        pytest.skip("password login needs root to create the test user")
    server = add_server(
        box, sshd, auth_type=AuthType.PASSWORD.value, user=sshd.password_user, password=box.encrypt(sshd.password), private_key=None
    )
    res, out = echo(stored(server, settings, box, pool))
    assert res.exit_code == 0 and out == sshd.password_user


def test_wrong_password_is_an_auth_error_and_not_retried(sshd, settings, box, pool):
    if not sshd.password_user:
        pytest.skip("password login needs root to create the test user")
    server = add_server(
        box, sshd, auth_type=AuthType.PASSWORD.value, user=sshd.password_user, password=box.encrypt("wrong"), private_key=None
    )
    res, _ = echo(stored(server, settings, box, pool))
    assert res.error_kind == "auth" and "authentication failed" in res.error and not res.attempt_errors


@pytest.mark.parametrize(("kind", "fmt"), [("rsa", None), ("ecdsa", None), ("ed25519", None), ("rsa", "PEM"), ("ecdsa", "PEM")])
def test_private_keys_with_passphrase(sshd, settings, box, pool, tmp_path, kind, fmt):
    text = authorize(sshd, tmp_path, kind, "pass phrase!", fmt)
    server = add_server(box, sshd, name=f"{kind}-{fmt}", private_key=box.encrypt(text), passphrase=box.encrypt("pass phrase!"))
    res, out = echo(stored(server, settings, box, pool))
    assert res.exit_code == 0 and out == sshd.user, res.error


def test_encrypted_key_without_passphrase_is_a_clear_auth_error(sshd, settings, box, pool, tmp_path):
    text = authorize(sshd, tmp_path, "ed25519", "secret")
    server = add_server(box, sshd, private_key=box.encrypt(text))
    res, _ = echo(stored(server, settings, box, pool))
    assert res.error_kind == "auth" and "passphrase" in res.error


def test_key_auth_without_a_stored_key_is_an_auth_error_not_a_fallback(sshd, settings, box, pool):
    server = add_server(box, sshd, name="no-key", private_key=None)
    res, _ = echo(stored(server, settings, box, pool))
    assert res.error_kind == "auth" and "no-key" in res.error and "without a stored private key" in res.error
    assert not res.attempt_errors


def test_uploaded_pem_key(sshd, settings, box, pool, tmp_path):
    text = authorize(sshd, tmp_path, "rsa", "", "PEM")
    assert text.startswith("-----BEGIN RSA PRIVATE KEY-----")
    PemKey.create(filename="deploy.pem", content=box.encrypt(text), size=len(text))
    server = add_server(box, sshd, auth_type=AuthType.PEM.value, pem_file="deploy.pem", private_key=None)
    res, out = echo(stored(server, settings, box, pool))
    assert res.exit_code == 0 and out == sshd.user


def test_missing_pem_key_is_an_auth_error(sshd, settings, box, pool):
    server = add_server(box, sshd, auth_type=AuthType.PEM.value, pem_file="gone.pem", private_key=None)
    with pytest.raises(SSHAuthError, match="gone.pem"):  # the worker reports it as the job's auth error
        target_for(server, settings, box)


def test_test_connection_reports_latency_and_pins_the_host_key(sshd, settings, box):
    server = add_server(box, sshd)
    info = probe_server(server, settings, box)
    assert info["host_key_fingerprint"] == sshd.host_key_fingerprint() and info["latency_ms"] > 0
    assert f"[{sshd.host}]:{sshd.port} ssh-ed25519 " in settings.known_hosts_path.read_text()


def test_strict_policy_refuses_an_unknown_host(sshd, settings, box, pool):
    server = add_server(box, sshd, host_key_policy="strict")
    with pytest.raises(HostKeyError, match="unknown"):
        probe_server(server, settings, box)
    res, _ = echo(stored(server, settings, box, pool))
    assert res.error_kind == "host_key" and not res.attempt_errors
    assert not settings.known_hosts_path.exists()


def test_changed_host_key_is_refused_naming_both_fingerprints(make_sshd, settings, box, pool):
    srv = make_sshd("127.0.0.1")
    server = add_server(box, srv)
    old = probe_server(server, settings, box)["host_key_fingerprint"]
    srv.stop()
    srv.regenerate_host_key()
    srv.start()
    new = srv.host_key_fingerprint()
    assert new != old
    with pytest.raises(HostKeyError) as err:
        probe_server(server, settings, box)
    assert old in err.value.message and new in err.value.message
    res, _ = echo(stored(server, settings, box, pool))
    assert res.error_kind == "host_key" and old in res.error
    server.host_key_policy = "off"  # explicit opt-out: connects, logged as insecure
    assert probe_server(server, settings, box)["host_key_fingerprint"] == new


def test_unreachable_host_in_test_connection_raises_ssh_error(sshd, settings, box):
    server = add_server(box, sshd)
    server.port = 1
    with pytest.raises(SSHError, match="cannot connect"):
        probe_server(server, settings, box)
