"""Template checks that need their own API settings (an in-process API: tests/support/api.py)."""

from __future__ import annotations

from tests.support.api import assert_envelope, running_api


def test_placeholders_in_a_script_for_a_non_posix_shell_are_refused(tmp_path):
    with running_api(tmp_path, with_queue=False, **{"security.allowed_shells": ["/bin/sh", "/usr/bin/python3"]}) as api:
        body = {"name": "py", "script": "print({{ x }})", "shell": "/usr/bin/python3", "servers": ["local"], "parameters": [{"name": "x"}]}
        refused = assert_envelope(api.post("/api/v1/templates", body), 400, "VALIDATION_ERROR")
        assert "POSIX" in refused["error"] and "$REMORA_PARAM_<NAME>" in refused["error"]
        ok = api.post("/api/v1/templates", {**body, "script": "import os; print(os.environ['REMORA_PARAM_X'])"})
        assert ok.status == 201, ok
        assert api.post("/api/v1/templates", {**body, "name": "sh", "shell": "/bin/sh"}).status == 201
