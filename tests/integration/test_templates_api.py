"""Template checks that need their own API settings (an in-process API: tests/support/api.py)."""

from __future__ import annotations

import json

from remora import models
from tests.support.api import assert_envelope, running_api


def test_placeholders_in_a_script_for_a_non_posix_shell_are_refused(tmp_path):
    with running_api(tmp_path, with_queue=False, **{"security.allowed_shells": ["/bin/sh", "/usr/bin/python3"]}) as api:
        body = {"name": "py", "script": "print({{ x }})", "shell": "/usr/bin/python3", "servers": ["local"], "parameters": [{"name": "x"}]}
        refused = assert_envelope(api.post("/api/v1/templates", body), 400, "VALIDATION_ERROR")
        assert "POSIX" in refused["error"] and "$REMORA_PARAM_<NAME>" in refused["error"]
        ok = api.post("/api/v1/templates", {**body, "script": "import os; print(os.environ['REMORA_PARAM_X'])"})
        assert ok.status == 201, ok
        assert api.post("/api/v1/templates", {**body, "name": "sh", "shell": "/bin/sh"}).status == 201


def test_a_template_script_is_hidden_from_viewers_and_runners_like_a_job_script(tmp_path):
    with running_api(tmp_path, **{"security.local_server_role": "viewer"}) as api:
        api.local_server_id()  # creates the local server
        body = {"name": "deploy", "script": "echo deploying {{ ref }}\n", "shell": "/bin/sh", "args": "--fast", "servers": ["local"],
                "parameters": [{"name": "ref", "default": "main"}]}  # fmt: skip
        assert api.post("/api/v1/templates", body).status == 201
        assert api.post("/api/v1/templates", {"name": "uptime", "command": "uptime", "servers": ["local"]}).status == 201
        for role in ("viewer", "runner"):
            one = api.get("/api/v1/templates/deploy", token=role).json()
            assert one["script"] is None and one["script_hidden"] is True, (role, one)
            assert one["args"] == "--fast" and one["parameters"][0]["name"] == "ref", one
            listed = {t["name"]: t for t in api.get("/api/v1/templates", token=role).json()["templates"]}
            assert listed["deploy"]["script"] is None and listed["deploy"]["script_hidden"] is True, (role, listed)
            # a command line stays visible, as a job's does
            assert listed["uptime"]["command"] == "uptime" and "script_hidden" not in listed["uptime"], listed
        # nor does the job a runner starts show it
        run = api.post("/api/v1/templates/deploy/run", {"params": {"ref": "v2"}}, token="runner")
        assert run.status == 201 and run.json()["script"] is None and run.json()["script_hidden"] is True, run
        for role in ("operator", "admin"):
            one = api.get("/api/v1/templates/deploy", token=role).json()
            assert one["script"] == body["script"] and "script_hidden" not in one, (role, one)
            listed = {t["name"]: t for t in api.get("/api/v1/templates", token=role).json()["templates"]}
            assert listed["deploy"]["script"] == body["script"], (role, listed)


def _stored_secrets(api, name: str) -> dict:
    row = models.Template.get(models.Template.name == name)
    return json.loads(api.server.app.ctx.secrets.decrypt_str(row.secret_env)) if row.secret_env else {}


def test_put_with_masked_secret_values_keeps_the_stored_ones(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        body = {"name": "backup", "command": "backup", "servers": ["local"],
                "env": {"REGION": "eu", "DB_PASSWORD": "pw-one-1234"}, "secret_env": {"API_TOKEN": "tok-one-1234"}}  # fmt: skip
        assert api.post("/api/v1/templates", body).status == 201
        shown = api.get("/api/v1/templates/backup").json()
        assert shown["secret_env"] == {"DB_PASSWORD": "***", "API_TOKEN": "***"} and shown["env"]["REGION"] == "eu", shown
        # env and secret_env as a client read them, sent back with one plain change: *** keeps the stored secrets
        edited = {**body, "env": {**shown["env"], "REGION": "us"}, "secret_env": shown["secret_env"]}
        put = api.request("PUT", "/api/v1/templates/backup", edited)
        assert put.status == 200, put
        assert put.json()["secret_env"] == {"DB_PASSWORD": "***", "API_TOKEN": "***"} and put.json()["env"]["REGION"] == "us", put
        assert _stored_secrets(api, "backup") == {"DB_PASSWORD": "pw-one-1234", "API_TOKEN": "tok-one-1234"}
        # only the names in secret_env, each ***: the same
        put = api.request("PUT", "/api/v1/templates/backup", {**body, "env": {"REGION": "us"}, "secret_env": shown["secret_env"]})
        assert put.status == 200, put
        assert _stored_secrets(api, "backup") == {"DB_PASSWORD": "pw-one-1234", "API_TOKEN": "tok-one-1234"}
        # a new value replaces one, a name left out is dropped
        put = api.request("PUT", "/api/v1/templates/backup", {**body, "env": {}, "secret_env": {"API_TOKEN": "tok-two-5678"}})
        assert put.status == 200 and put.json()["secret_env"] == {"API_TOKEN": "***"}, put
        assert _stored_secrets(api, "backup") == {"API_TOKEN": "tok-two-5678"}
        # *** for a name with no stored value is a 400 naming it, never a stored "***"
        for field in ("secret_env", "env"):
            refused = assert_envelope(api.request("PUT", "/api/v1/templates/backup", {**body, field: {"NEW_SECRET": "***"}}), 400)
            assert "NEW_SECRET" in refused["error"] and field in refused["details"], refused
            refused = assert_envelope(api.post("/api/v1/templates", {**body, "name": "fresh", field: {"NEW_SECRET": "***"}}), 400)
            assert "NEW_SECRET" in refused["error"], refused
        assert _stored_secrets(api, "backup") == {"API_TOKEN": "tok-two-5678"}
