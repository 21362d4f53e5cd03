"""Queue outages: a recorded job survives a queue that is down; a full queue records nothing."""

from __future__ import annotations

from remora.models import Job
from remora.netqueue.server import QueueServer
from tests.support.api import assert_envelope, running_api
from tests.support.waits import wait_for


def test_queue_down_records_job_and_reconciler_queues_it_later(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        reply = api.post("/api/v1/jobs", {"command": "echo", "server_id": api.local_server_id()})
        assert reply.status == 201, reply
        job_id = reply.json()["id"]
        assert Job.get_by_id(job_id).status == "queued"
        assert api.get("/health", token=None).status == 503
        host, port = api.settings.queue.addr.split(":")
        queue = QueueServer(host=host, port=int(port), persistence=False, fsync="never")
        queue.start()
        try:
            wait_for(lambda: api.queue.peek(job_id) is not None, timeout=10, what="reconciler to put the job")
            assert api.get("/health", token=None).json()["queue"] == "ok"
        finally:
            queue.stop()


def test_queue_full_answers_503_and_records_nothing(tmp_path):
    queue = QueueServer(host="127.0.0.1", port=0, persistence=False, fsync="never", max_size=1)
    queue.start()
    try:
        host, port = queue.address
        with running_api(tmp_path, **{"queue.addr": f"{host}:{port}"}) as api:
            assert api.post("/api/v1/jobs", {"command": "a", "server_id": api.local_server_id()}).status == 201
            before = Job.select().count()
            full = api.post("/api/v1/jobs", {"command": "b", "server_id": api.local_server_id()})
            assert_envelope(full, 503, "QUEUE_FULL")
            assert full.headers["retry-after"]
            assert Job.select().count() == before
    finally:
        queue.stop()
