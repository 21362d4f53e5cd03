"""The executor's Target: plain connection facts whose secrets never show in its repr or its pool key."""

from __future__ import annotations

from remora.executor.target import AuthKind, Target


def test_repr_and_pool_key_hold_no_secret():
    target = Target("db1", 2222, "deploy", AuthKind.KEY, private_key="-----BEGIN KEY-----secret", passphrase="hunter2-pass")
    shown = repr(target) + repr(target.connection_key)
    assert "secret" not in shown and "hunter2" not in shown
    assert target.connection_key[:3] == ("db1", 2222, "deploy") and target.name == "deploy@db1:2222"


def test_pool_key_tells_credentials_apart_and_matches_equal_ones():
    def key(**fields):
        return Target("db1", 22, "deploy", AuthKind.PASSWORD, **fields).connection_key

    assert key(password="a") == key(password="a")
    assert key(password="a") != key(password="b")
    assert Target("db1", 22, "deploy", "key", private_key="k").connection_key != key(password="k")  # auth kind counts
    hop = Target("bastion", user="jump", password="x")
    assert key(password="a", jump=[hop]) != key(password="a")
