"""Who may follow output on the change feed: exactly who may read a job's log (an in-process API of its own)."""

from __future__ import annotations

import uuid

from tests.support.api import running_api


def test_a_token_that_may_not_read_logs_gets_no_output(tmp_path):
    """The feed asks the log route's own role: raised to operator, a viewer gets 403 for both, an operator output events."""
    with running_api(tmp_path) as api:
        job_id = str(uuid.uuid4())
        logs, _ = api.server.app.router.match("GET", f"/api/v1/jobs/{job_id}/logs")
        query = f"/api/v1/events?job_id={job_id}&output=true&timeout=0"
        assert api.get(query, token="viewer").status == 200
        logs.role = "operator"
        assert api.get(f"/api/v1/jobs/{job_id}/logs", token="viewer").status == 403
        denied = api.get(query, token="viewer")
        assert denied.status == 403 and "logs" in denied.json()["error"], denied
        assert api.get(f"/api/v1/events?job_id={job_id}&timeout=0", token="viewer").status == 200  # states only: still fine
        assert api.get(query, token="operator").json()["output"] is True
