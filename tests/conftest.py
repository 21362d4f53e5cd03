"""Shared fixtures: real PostgreSQL and OpenSSH servers (see tests/fixtures/)."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.sshd"]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'remora.db'}"
