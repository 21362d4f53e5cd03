"""Shared fixtures: real PostgreSQL and OpenSSH servers (plugins in tests/support/; helpers there too)."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.browser", "tests.support.postgres", "tests.support.sshd"]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'remora.db'}"
