"""``--no-auth``: the API serves without tokens (the CLI allows it only on loopback)."""

from __future__ import annotations

import pytest

from remora.netaddr import is_loopback
from tests.support.api import running_api


def test_no_auth_mode_serves_without_tokens(tmp_path):
    with running_api(tmp_path, auth=False) as api:
        assert api.get("/api/v1/jobs", token=None).status == 200
        assert api.get("/api/v1/audit", token=None).status == 200
        assert api.get("/api/v1/auth/whoami", token=None).json() == {"name": "anonymous", "role": "admin"}


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("10.1.2.3", False)]
)
def test_no_auth_is_only_for_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback
