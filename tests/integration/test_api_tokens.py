"""``/api/v1/tokens``: list, create and revoke API tokens over HTTP (admin only, audited)."""

from __future__ import annotations

import json

import pytest

from remora import auth
from remora.models import ApiToken
from remora.services import audit
from tests.support.api import assert_envelope, running_api

TOKENS = "/api/v1/tokens"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_api(tmp_path_factory.mktemp("tokens")) as api:
        yield api


def test_only_admins_may_list_create_or_revoke_tokens(api):
    for role in ("viewer", "operator"):
        assert_envelope(api.get(TOKENS, token=role), 403, "FORBIDDEN")
        assert_envelope(api.post(TOKENS, {"name": f"by-{role}", "role": "viewer"}, token=role), 403, "FORBIDDEN")
        assert_envelope(api.request("DELETE", f"{TOKENS}/admin", token=role), 403, "FORBIDDEN")
        assert_envelope(api.get(TOKENS, token=None), 401, "UNAUTHORIZED")
    assert not ApiToken.select().where(ApiToken.name.startswith("by-")).exists()


def test_create_shows_the_token_once_and_it_works_with_its_role(api):
    reply = api.post(TOKENS, {"name": "ci", "role": "operator", "expires_in": "30d"})
    assert reply.status == 201, reply
    created = reply.json()
    plaintext = created["token"]
    assert plaintext.startswith("rmr_") and (created["name"], created["role"]) == ("ci", "operator")
    assert created["expires_at"] is not None and created["revoked"] is False
    assert api.get("/api/v1/auth/whoami", token=plaintext).json() == {"name": "ci", "role": "operator"}
    assert_envelope(api.get(TOKENS, token=plaintext), 403, "FORBIDDEN")
    row = ApiToken.get(ApiToken.name == "ci")
    assert row.token_hash == auth.hash_token(plaintext)

    listed = api.get(TOKENS)
    assert listed.status == 200, listed
    tokens = listed.json()["tokens"]
    mine = next(t for t in tokens if t["name"] == "ci")
    assert {"id", "name", "role", "created_at", "last_used_at", "expires_at"} <= set(mine)
    assert mine["id"] == created["id"] and mine["last_used_at"] is not None  # whoami above used it
    # Neither a token nor a hash of any token ever appears in the list.
    body = listed.body.decode()
    assert plaintext not in body and row.token_hash not in body
    for other in ApiToken.select():
        assert other.token_hash not in body
    assert all("token" not in t and "token_hash" not in t for t in tokens)
    never = api.post(TOKENS, {"name": "forever", "role": "viewer"}).json()
    assert never["expires_at"] is None and never["token"] != plaintext


def test_revoke_by_name_or_id_refuses_the_token_at_once_and_is_audited(api):
    by_name = api.post(TOKENS, {"name": "to-revoke", "role": "admin"}).json()
    by_id = api.post(TOKENS, {"name": "to-revoke-by-id", "role": "viewer", "expires_in": 3600}).json()
    for created in (by_name, by_id):
        assert api.get("/api/v1/jobs", token=created["token"]).status == 200
    reply = api.request("DELETE", f"{TOKENS}/to-revoke")
    assert reply.status == 200, reply
    assert reply.json()["revoked"] is True and "token" not in reply.json()
    assert_envelope(api.get("/api/v1/jobs", token=by_name["token"]), 401, "UNAUTHORIZED")
    assert api.request("DELETE", f"{TOKENS}/{by_id['id']}").status == 200
    assert_envelope(api.get("/api/v1/jobs", token=by_id["token"]), 401, "UNAUTHORIZED")
    listed = {t["name"]: t for t in api.get(TOKENS).json()["tokens"]}
    assert listed["to-revoke"]["revoked"] is True and listed["to-revoke-by-id"]["revoked"] is True

    audit.flush()
    events = api.get("/api/v1/audit?limit=100").json()["events"]
    actions = {(e["action"], e["target_type"], e["target_id"]) for e in events}
    assert ("create_token", "token", by_name["id"]) in actions
    assert ("revoke_token", "token", by_name["id"]) in actions
    assert ("revoke_token", "token", by_id["id"]) in actions
    # The audit log names the token; it never holds the token itself.
    text = json.dumps(events)
    assert by_name["token"] not in text and by_id["token"] not in text


def test_a_runner_token_is_created_through_the_api(api):
    reply = api.post(TOKENS, {"name": "a-runner", "role": "runner"})
    assert reply.status == 201 and reply.json()["role"] == "runner", reply
    assert api.get("/api/v1/auth/whoami", token=reply.json()["token"]).json()["role"] == "runner"


def test_bad_input_is_400_duplicates_409_unknown_404(api):
    api.post(TOKENS, {"name": "taken", "role": "viewer"})
    assert_envelope(api.post(TOKENS, {"name": "taken", "role": "admin"}), 409, "CONFLICT")
    for body in (
        {"name": "r", "role": "root"},
        {"name": "r", "role": "owner"},
        {"name": "r"},
        {"role": "viewer"},
        {"name": "", "role": "viewer"},
        {"name": "a/b", "role": "viewer"},
        {"name": "x" * 129, "role": "viewer"},
        {"name": "e", "role": "viewer", "expires_in": 0},
        {"name": "e", "role": "viewer", "expires_in": -5},
        {"name": "e", "role": "viewer", "expires_in": "soon"},
        {"name": "e", "role": "viewer", "expires_in": 1e300},
        {"name": "e", "role": "viewer", "expires_in": True},
        {"name": "e", "role": "viewer", "token": "rmr_chosen"},
    ):
        assert_envelope(api.post(TOKENS, body), 400, "VALIDATION_ERROR")
    assert not ApiToken.select().where(ApiToken.name.in_(["r", "e", "a/b"])).exists()
    assert_envelope(api.request("DELETE", f"{TOKENS}/no-such-token"), 404, "NOT_FOUND")
    assert_envelope(api.request("DELETE", f"{TOKENS}/00000000-0000-0000-0000-000000000000"), 404, "NOT_FOUND")


def test_openapi_documents_the_token_routes(api):
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths[TOKENS]) and "delete" in paths[TOKENS + "/{id}"]
    created = paths[TOKENS]["post"]["responses"]
    assert "201" in created and "409" in created and "400" in created
