"""Remora's known_hosts: pin on first use, strict, off, changed keys refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest

from remora.errors import ConfigError, HostKeyError
from remora.executor.hostkeys import KnownHosts, fingerprint

KEY_A = b"\x00\x00\x00\x0bssh-ed25519" + b"A" * 32
KEY_B = b"\x00\x00\x00\x0bssh-ed25519" + b"B" * 32


def test_fingerprint_is_openssh_sha256_format():
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(KEY_A).digest()).decode().rstrip("=")
    assert fingerprint(KEY_A) == expected


def test_accept_new_pins_then_accepts_the_same_key(tmp_path):
    kh = KnownHosts(tmp_path / "kh")
    assert kh.verify("10.0.0.1", 2222, "ssh-ed25519", KEY_A, "accept-new") == fingerprint(KEY_A)
    line = (tmp_path / "kh").read_text()
    assert line.startswith("[10.0.0.1]:2222 ssh-ed25519 ")
    assert oct(os.stat(tmp_path / "kh").st_mode & 0o777) == "0o600"
    kh.verify("10.0.0.1", 2222, "ssh-ed25519", KEY_A, "strict")
    kh.verify("10.0.0.1", 2222, "ssh-ed25519", KEY_A, "accept-new")
    assert (tmp_path / "kh").read_text() == line  # not pinned twice


def test_port_22_uses_the_bare_host_name(tmp_path):
    kh = KnownHosts(tmp_path / "kh")
    kh.verify("host.example", 22, "ssh-ed25519", KEY_A, "accept-new")
    assert (tmp_path / "kh").read_text().startswith("host.example ssh-ed25519 ")


def test_changed_key_is_refused_naming_both_fingerprints(tmp_path):
    kh = KnownHosts(tmp_path / "kh")
    kh.verify("h", 2222, "ssh-ed25519", KEY_A, "accept-new")
    for policy in ("accept-new", "strict"):
        with pytest.raises(HostKeyError) as err:
            kh.verify("h", 2222, "ssh-ed25519", KEY_B, policy)
        assert fingerprint(KEY_A) in err.value.message and fingerprint(KEY_B) in err.value.message
        assert "CHANGED" in err.value.message


def test_a_different_key_type_for_a_pinned_host_is_also_refused(tmp_path):
    kh = KnownHosts(tmp_path / "kh")
    kh.verify("h", 2222, "ssh-ed25519", KEY_A, "accept-new")
    with pytest.raises(HostKeyError):
        kh.verify("h", 2222, "ssh-rsa", b"rsa-blob", "accept-new")


def test_strict_refuses_unknown_hosts(tmp_path):
    kh = KnownHosts(tmp_path / "kh")
    with pytest.raises(HostKeyError, match="unknown"):
        kh.verify("h", 2222, "ssh-ed25519", KEY_A, "strict")
    assert not (tmp_path / "kh").exists()


def test_off_accepts_anything_without_pinning(tmp_path, caplog):
    kh = KnownHosts(tmp_path / "kh")
    kh.verify("h", 2222, "ssh-ed25519", KEY_A, "accept-new")
    assert kh.verify("h", 2222, "ssh-ed25519", KEY_B, "off") == fingerprint(KEY_B)
    assert "insecure" in caplog.text


def test_hashed_entries_are_understood(tmp_path):
    salt = os.urandom(20)
    digest = hmac.new(salt, b"[h]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    (tmp_path / "kh").write_text(f"# comment\n{hashed} ssh-ed25519 {base64.b64encode(KEY_A).decode()}\n")
    kh = KnownHosts(tmp_path / "kh")
    kh.verify("h", 2222, "ssh-ed25519", KEY_A, "strict")
    with pytest.raises(HostKeyError):
        kh.verify("h", 2222, "ssh-ed25519", KEY_B, "strict")


def test_unknown_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        KnownHosts(tmp_path / "kh").verify("h", 22, "ssh-ed25519", KEY_A, "yolo")


def test_pinning_a_thousand_new_hosts_reads_the_file_once_not_once_per_host(tmp_path, monkeypatch):
    """A first fan-out to N new hosts pins N keys: each pin appends, and no pin re-reads what this process wrote."""
    from remora.executor import hostkeys

    parsed: list[int] = []
    real_parse = hostkeys._parse

    def counting(text: str) -> list:
        parsed.append(text.count("\n"))
        return real_parse(text)

    monkeypatch.setattr(hostkeys, "_parse", counting)
    kh = KnownHosts(tmp_path / "kh")
    for i in range(1000):
        kh.verify(f"10.0.{i // 250}.{i % 250}", 2222, "ssh-ed25519", KEY_A, "accept-new")
    for i in range(1000):
        kh.verify(f"10.0.{i // 250}.{i % 250}", 2222, "ssh-ed25519", KEY_A, "strict")
    assert len((tmp_path / "kh").read_text().splitlines()) == 1000
    assert sum(parsed) <= 1000, f"{len(parsed)} reads, {sum(parsed)} lines parsed"  # main: 1,500,000 lines


def test_a_key_another_process_pinned_meanwhile_is_seen_and_not_pinned_twice(tmp_path):
    mine, theirs = KnownHosts(tmp_path / "kh"), KnownHosts(tmp_path / "kh")
    mine.verify("h1", 2222, "ssh-ed25519", KEY_A, "accept-new")
    theirs.verify("h2", 2222, "ssh-ed25519", KEY_B, "accept-new")  # the file grew behind mine's back
    mine.verify("h2", 2222, "ssh-ed25519", KEY_B, "strict")
    with pytest.raises(HostKeyError, match="CHANGED"):
        mine.verify("h2", 2222, "ssh-ed25519", KEY_A, "accept-new")
    theirs.verify("h3", 2222, "ssh-ed25519", KEY_A, "accept-new")
    mine.verify("h1", 2222, "ssh-ed25519", KEY_A, "accept-new")
    # both pin h4 "at once": the second finds the first's line under the file lock and writes none
    mine.verify("h4", 2222, "ssh-ed25519", KEY_A, "accept-new")
    theirs.add("h4", 2222, "ssh-ed25519", KEY_A)
    lines = (tmp_path / "kh").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["[h1]:2222", "[h2]:2222", "[h3]:2222", "[h4]:2222"]
