"""A closed connection hands its unstarted reservations back at once; START keeps a reservation past the close."""

from __future__ import annotations

import pytest

from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from tests.support.waits import wait_for


@pytest.fixture
def server():
    qs = QueueServer(host="127.0.0.1", port=0, persistence=False)
    qs.start()
    yield qs
    qs.stop()


def test_closing_hands_back_unstarted_reservations_and_keeps_started_ones(server):
    host, port = server.address
    addr = f"{host}:{port}"
    with QueueClient(addr) as producer:
        for job_id in ("first", "second", "third"):
            producer.put(job_id, ttr=60.0)
        worker = QueueClient(addr, name="doomed")
        got = worker.reserve(["job_queue"], timeout=1, count=2, worker_id="doomed")
        assert [r.id for r in got] == ["first", "second"]
        assert worker.start(["first"], worker_id="doomed") == [True]
        assert worker.start(["third"], worker_id="doomed") == [False]  # not reserved by anyone
        worker.close()  # like kill -9: the socket closes
        wait_for(lambda: producer.peek("second").state == "ready", 5, what="the unstarted job handed back")
        second = producer.peek("second")
        assert second.worker is None
        assert producer.peek("first").state == "reserved"  # started: keeps its lease
        other = producer.reserve(["job_queue"], timeout=1, count=5, worker_id="rescuer")
        assert [r.id for r in other] == ["second", "third"]  # its old place, ahead of later jobs


def test_start_can_carry_the_ack_of_the_previous_job(server):
    host, port = server.address
    with QueueClient(f"{host}:{port}") as c:
        c.put("one", ttr=60.0)
        c.put("two", ttr=60.0)
        (one,) = c.reserve(["job_queue"], timeout=1, worker_id="w")
        c.start_nowait([one.id], worker_id="w")
        (two,) = c.reserve(["job_queue"], timeout=1, worker_id="w")
        c.start_nowait([two.id], worker_id="w", acks=[one.id])
        wait_for(lambda: c.peek("one") is None, 5, what="the ACK carried by START")
        assert c.start([two.id], worker_id="w") == [True]


def test_start_on_a_new_connection_is_accepted_for_the_same_worker_only(server):
    host, port = server.address
    with QueueClient(f"{host}:{port}") as a, QueueClient(f"{host}:{port}") as b:
        a.put("job", ttr=60.0)
        a.reserve(["job_queue"], timeout=1, worker_id="w1")
        assert b.start(["job"], worker_id="w2") == [False]
        assert b.start(["job"], worker_id="w1") == [True]
        a.close()  # the reserving connection closes afterwards: the job stays reserved (started)
        wait_for(lambda: b.stats()["connections"] == 1, 5, what="the close to be seen")
        assert b.peek("job").state == "reserved"
