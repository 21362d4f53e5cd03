"""Authentication and roles, walking the whole route table so no route can skip them."""

from __future__ import annotations

import uuid

import pytest

from remora import auth, models, services
from remora.auth import ROLE_RANK
from tests.support.api import ROLES, assert_envelope, running_api
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    # Hundreds of deliberate failures from one address: the per-address limit (tested in
    # tests/security/test_api_hardening.py) is off here so every answer is the plain 401.
    with running_api(tmp_path_factory.mktemp("auth"), **{"api.auth_failures_per_second": 0}) as api:
        yield api


def concrete(route):
    path = route.pattern
    for _, name, conv in route.params:
        value = str(uuid.uuid4()) if conv == "uuid" else "nothing.pem"
        path = path.replace("{" + f"{name}:{conv}" + "}", value)
    if any(param.name == "timeout" for param in route.query):
        path += "?timeout=0"  # a long-poll (the change feed) answers at once: the walk checks roles, not waiting
    return path


def protected(api):
    routes = [r for r in api.server.app.routes if r.role is not None]
    assert len(routes) >= 30
    return routes


def test_every_route_but_health_requires_a_token(api):
    open_routes = sorted(r.pattern for r in api.server.app.routes if r.role is None)
    assert open_routes == ["/api/v1/health", "/health"]


def test_no_token_and_wrong_token_are_401_on_every_route(api):
    for route in protected(api):
        path = concrete(route)
        assert_envelope(api.request(route.method, path, token=None), 401, "UNAUTHORIZED")
        assert_envelope(api.request(route.method, path, token="rmr_wrong"), 401, "UNAUTHORIZED")
        reply = api.request(route.method, path, token=None, headers={"Authorization": "Basic YTpi"})
        assert_envelope(reply, 401)
        assert reply.headers["www-authenticate"].startswith("Bearer")


def test_weaker_roles_are_403_and_sufficient_roles_pass_auth(api):
    for route in protected(api):
        path = concrete(route)
        for role in ROLES:
            reply = api.request(route.method, path, token=role)
            if ROLE_RANK[role] < ROLE_RANK[route.role]:
                assert_envelope(reply, 403, "FORBIDDEN")
            else:
                assert reply.status not in (401, 403), (route.method, path, role, reply)


def test_expired_and_revoked_tokens_are_refused(api):
    row, expiring = services.create_token("short-lived", "viewer", expires=1.5)
    assert api.get("/api/v1/jobs", token=expiring).status == 200
    # Poll until the API refuses the token; it must not refuse it before its expiry passed.
    refused = wait_for(lambda: (r := api.get("/api/v1/jobs", token=expiring)).status == 401 and r, 15, 0.05, "the token to expire")
    assert models.utcnow() >= row.expires_at
    assert "expired" in assert_envelope(refused, 401, "UNAUTHORIZED")["error"]
    _, revoked = services.create_token("to-revoke", "admin")
    assert api.get("/api/v1/jobs", token=revoked).status == 200
    auth.revoke_token("to-revoke")
    assert_envelope(api.get("/api/v1/jobs", token=revoked), 401)


def test_tokens_are_stored_hashed(api):
    row, plaintext = services.create_token("hashed", "viewer")
    assert plaintext.startswith("rmr_") and len(plaintext) > 40
    assert row.token_hash == auth.hash_token(plaintext) and plaintext not in row.token_hash
    with pytest.raises(Exception):
        services.create_token("hashed", "viewer")


def test_whoami_names_the_token_and_its_role(api):
    for role in ROLES:
        reply = api.get("/api/v1/auth/whoami", token=role)
        assert reply.status == 200, reply
        data = reply.json()
        assert data["role"] == role and data["name"].startswith(f"{role}-"), data
    assert_envelope(api.get("/api/v1/auth/whoami", token=None), 401, "UNAUTHORIZED")
    spec = api.get("/api/v1/openapi.json").json()
    assert spec["paths"]["/api/v1/auth/whoami"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["required"] == [
        "name",
        "role",
    ]
