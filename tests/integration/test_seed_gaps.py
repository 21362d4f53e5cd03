"""Job list filters, output search and the shell validation message against a real API (SQLite)."""

from __future__ import annotations

from tests.support.api import assert_envelope, running_api


def test_shell_validation_lists_only_real_shells(tmp_path):
    with running_api(tmp_path, **{"security.allowed_shells": ["/bin/sh", "/bin/bash"]}) as api:
        reply = api.post("/api/v1/jobs/script", {"script": "echo hi", "shell": "/bin/zsh", "server_id": api.local_server_id()})
        data = assert_envelope(reply, 400, "VALIDATION_ERROR")
        message = data["details"]["shell"]
        assert message == "must be one of /bin/sh, /bin/bash", message
        assert "None" not in data["error"]
