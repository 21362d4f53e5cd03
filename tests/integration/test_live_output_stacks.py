"""Live output on the change feed, each test on a stack of its own: who may follow it (an in-process API), how
soon output written in the API's own process (``remora up``) reaches a waiting long-poll, and PostgreSQL."""

from __future__ import annotations

import statistics
import time
import uuid

from tests.integration.test_live_output import COUNT_200, EXPECTED_200, Assembled, fleet, follow, submit
from tests.support.api import running_api
from tests.support.cluster import Cluster, make_remora
from tests.support.http import request


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


def test_output_written_in_the_apis_own_process_wakes_a_waiting_long_poll_at_once(tmp_path):
    """``remora up`` runs its workers in the API process: a flush of output wakes the feed's waiters, not its 0.25 s poll.

    The job prints ten timestamps at once (ten lines flush at once), seven times; each answer's delay after the
    tenth is measured.  Found by the periodic query, the median would be about 0.12 s.
    """
    remora = make_remora("checkout", tmp_path, None)
    remora.start(workers=2)
    try:
        token = (remora.data_dir / "admin.token").read_text().strip()
        burst = "for i in 1 2 3 4 5 6 7 8 9 10; do date +%s.%N; done"
        body = {"command": "sh", "args": f"-c 'sleep 1; for n in 1 2 3 4 5 6 7; do {burst}; sleep 0.7; done'", "server_id": "local"}
        job = request("127.0.0.1", remora.port, "POST", "/api/v1/jobs", body, token=token, timeout=10).json()
        cursor, delays, text = "0", [], ""
        deadline = time.monotonic() + 60
        while len(delays) < 7:
            assert time.monotonic() < deadline, (delays, text)
            query = f"/api/v1/events?job_id={job['id']}&output=true&timeout=10&cursor={cursor}"
            answer = request("127.0.0.1", remora.port, "GET", query, token=token, timeout=30).json()
            now = time.time()
            cursor = answer["cursor"]
            for event in answer["events"]:
                if event["kind"] == "output":
                    text += event["data"]
            lines = text.split("\n")
            while len(lines) > 10:  # a whole burst arrived: its last line is when it was flushed
                delays.append(now - float(lines[9]))
                lines, text = lines[10:], "\n".join(lines[10:])
        assert statistics.median(delays) < 0.06, delays
    finally:
        remora.stop()


def test_on_postgresql_output_events_are_complete_and_resume_exactly(postgres, tmp_path):
    """The same feed on PostgreSQL (its own queue, API and worker): 3 hosts, answers chained by their cursors."""
    stack = Cluster(tmp_path / "pg", db_url=postgres.new_database("live_output"))
    stack.start_queue()
    stack.start_api()
    stack.start_worker("w1", concurrency=8)
    try:
        stack.wait_workers(1)
        tag = fleet(stack, 3)
        batch_id, job_ids = submit(stack, tag, COUNT_200 + "; echo warn >&2")
        seen = Assembled()
        follow(stack, "0", lambda: len(seen.final) == 3, seen, batch_id=batch_id)
        for job_id in job_ids:
            assert seen.text(job_id) == EXPECTED_200 and seen.text(job_id, "stderr") == "warn\n"
    finally:
        stack.stop()
        stack.close()
