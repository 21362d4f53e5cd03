"""The change feed (``GET /api/v1/events``) and a batch's results in one request, on separate queue, API and worker processes.

Jobs run on ``auth_type: local`` servers through a real worker process; the API is its own process,
so a change the worker makes reaches the feed through the database (the feed's periodic query), and
a change the API makes wakes its waiters at once.
"""

from __future__ import annotations

import http.client
import json
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from remora import jobstate, models, services
from remora.cli.follow import Watcher
from remora.client import Client
from remora.services import events
from tests.support.cluster import Cluster, local_fleet
from tests.support.http import request
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    stack = Cluster(tmp_path_factory.mktemp("events"))
    stack.start_queue()
    stack.start_api()
    stack.start_worker("w1", concurrency=8)
    stack.wait_workers(1)
    yield stack
    stack.stop()
    stack.close()


def feed(cluster: Cluster, **params: Any) -> dict[str, Any]:
    return cluster.client(timeout=70).get("/api/v1/events", **params)


def now_cursor(cluster: Cluster) -> str:
    return str(feed(cluster, timeout=0)["cursor"])


def collect(cluster: Cluster, cursor: str, until: Any, timeout: float = 60, **filters: Any) -> tuple[list[dict[str, Any]], str]:
    """Long-poll from ``cursor`` until ``until(events)`` holds; every event seen and the last cursor."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        assert time.monotonic() < deadline, seen
        answer = feed(cluster, cursor=cursor, timeout=5, **filters)
        seen.extend(answer["events"])
        cursor = answer["cursor"]
    return seen, cursor


def one_host(cluster: Cluster) -> str:
    """A fresh local server's name (a job on it runs through the worker process)."""
    tag = "h" + uuid.uuid4().hex[:6]
    local_fleet(cluster.client(), 1, tag)
    return f"{tag}-0"


def batch_done(batch_id: str) -> Any:
    return lambda seen: any(e["kind"] == "batch" and e["batch_id"] == batch_id and e["status"] != "running" for e in seen)


def test_a_20_host_batch_feeds_each_jobs_queued_running_completed_then_the_batch_end(cluster):
    tag = "f" + uuid.uuid4().hex[:6]
    local_fleet(cluster.client(), 20, tag)
    start = now_cursor(cluster)
    reply = cluster.client().post("/api/v1/jobs", {"command": "echo", "args": "out-$HOSTNAME", "servers": [f"tag:{tag}"]})
    batch_id, job_ids = reply["batch_id"], [j["id"] for j in reply["jobs"]]
    seen, _ = collect(cluster, start, batch_done(batch_id), batch_id=batch_id)
    assert all(e["batch_id"] == batch_id for e in seen)
    assert [int(e["id"]) for e in seen] == sorted(int(e["id"]) for e in seen) and all(int(e["id"]) > int(start) for e in seen)
    for job_id in job_ids:
        statuses = [e["status"] for e in seen if e.get("job_id") == job_id]
        assert statuses == ["queued", "running", "completed"], (job_id, statuses)
        assert [e["exit_code"] for e in seen if e.get("job_id") == job_id][-1] == 0
    assert [e["status"] for e in seen if e["kind"] == "batch"] == ["running", "completed"]

    # resuming from a cursor in the middle returns exactly the newer events
    middle = seen[len(seen) // 2]["id"]
    later, _ = collect(cluster, middle, lambda s: len(s) >= len(seen) - len(seen) // 2 - 1, batch_id=batch_id)
    assert [e["id"] for e in later] == [e["id"] for e in seen if int(e["id"]) > int(middle)]
    # filters: one job only; cursor 0 reads from the oldest change kept
    one = feed(cluster, cursor="0", job_id=job_ids[3], timeout=0)["events"]
    assert [e["status"] for e in one] == ["queued", "running", "completed"] and {e["job_id"] for e in one} == {job_ids[3]}
    both = feed(cluster, cursor="0", job_id=f"{job_ids[0]},{job_ids[1]}", timeout=0)["events"]
    assert {e["job_id"] for e in both} == {job_ids[0], job_ids[1]} and len(both) == 6
    other = feed(cluster, cursor="0", batch_id=str(uuid.uuid4()), timeout=0)
    assert other["events"] == [] and int(other["cursor"]) >= int(seen[-1]["id"])
    # kind: only the batch's own changes (its end in one answer), or only its jobs'
    ends = feed(cluster, cursor=start, batch_id=batch_id, kind="batch", timeout=0)
    assert [(e["kind"], e["status"]) for e in ends["events"]] == [("batch", "running"), ("batch", "completed")]
    assert int(ends["cursor"]) >= int(seen[-1]["id"])  # past the jobs' changes it skipped
    jobs_only = feed(cluster, cursor=start, batch_id=batch_id, kind="job", timeout=0)["events"]
    assert [e["id"] for e in jobs_only] == [e["id"] for e in seen if e["kind"] == "job"]
    everywhere = feed(cluster, cursor=start, kind="batch", timeout=0)["events"]
    assert {e["kind"] for e in everywhere} == {"batch"} and batch_id in {e["batch_id"] for e in everywhere}

    # the batch's results in one request: status, exit code, sizes and bodies per host
    detail = cluster.client().get(f"/api/v1/batches/{batch_id}", output="true")
    assert detail["status"] == "completed" and len(detail["hosts"]) == 20
    for host in detail["hosts"]:
        assert host["exit_code"] == 0 and host["stdout"].startswith("out-") and host["stdout_bytes"] == len(host["stdout"].encode())
        assert host["stderr"] == "" and host["output_truncated"] is False


def test_a_long_poll_returns_as_soon_as_the_api_writes_a_change(cluster):
    host = one_host(cluster)
    start = now_cursor(cluster)
    result: dict[str, Any] = {}

    def poll() -> None:
        began = time.monotonic()
        result["answer"] = feed(cluster, cursor=start, timeout=20)
        result["took"], result["ended"] = time.monotonic() - began, time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)  # let the long-poll start waiting: what is measured is the wake-up, not the request
    submitted = time.monotonic()
    job = cluster.client().submit({"command": "true", "servers": [host]})[0]
    waiter.join(25)
    assert not waiter.is_alive()
    assert result["took"] < 5, result  # not the 20 s timeout
    assert job["id"] in [e.get("job_id") for e in result["answer"]["events"]]
    assert result["ended"] - submitted < 0.5, result  # woken by the API's own write, not by a later poll


def test_a_change_written_by_another_process_reaches_the_feed(cluster):
    """This test process writes through ``jobstate`` into the shared database: the API process sees it by its periodic query."""
    host = one_host(cluster)
    job = cluster.client().submit({"command": "sleep", "args": "30", "servers": [host]})[0]
    wait_for(lambda: cluster.client().job(job["id"])["status"] == "running", 30, 0.05, "the job to run")
    start = now_cursor(cluster)
    result: dict[str, Any] = {}

    def poll() -> None:
        began = time.monotonic()
        result["answer"] = feed(cluster, cursor=start, job_id=job["id"], timeout=20)
        result["took"], result["ended"] = time.monotonic() - began, time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)
    assert jobstate.cancel(job["id"], "test") is jobstate.Cancel.REQUESTED  # no status change: no event
    row = models.Job.get_by_id(job["id"])
    written = time.monotonic()
    assert jobstate.finish(job["id"], row.worker, row.attempts, models.JobStatus.FAILED, exit_code=7, error="exit code 7")
    waiter.join(25)
    assert not waiter.is_alive() and result["took"] < 10, result
    assert [(e["status"], e["exit_code"]) for e in result["answer"]["events"]] == [("failed", 7)]
    assert result["ended"] - written < 1.5, result  # found by the periodic query within a few polls, not at the timeout


def read_sse(resp: http.client.HTTPResponse, count: int) -> list[dict[str, str]]:
    """``count`` messages (comments skipped) as field dicts, read off a live stream."""
    messages: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    while len(messages) < count:
        line = resp.fp.readline().decode()
        assert line, "stream ended early"
        line = line.rstrip("\n")
        if not line:
            if fields:
                messages.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = (fields.get(name, "") + "\n" if name == "data" and name in fields else "") + value.lstrip(" ")
    return messages


def open_stream(cluster: Cluster, query: str, headers: dict[str, str] | None = None) -> tuple[http.client.HTTPConnection, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.api_port, timeout=20)
    conn.request(
        "GET",
        "/api/v1/events" + query,
        headers={"Accept": "text/event-stream", "Authorization": f"Bearer {cluster.token}", **(headers or {})},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    return conn, resp


def test_server_sent_events_frame_each_change_with_its_cursor_and_last_event_id_resumes(cluster):
    host = one_host(cluster)
    conn, resp = open_stream(cluster, "")
    ready = read_sse(resp, 1)[0]
    assert ready["event"] == "ready" and json.loads(ready["data"])["cursor"] == ready["id"]
    job = cluster.client().submit({"command": "true", "servers": [host]})[0]
    messages: list[dict[str, str]] = []
    while not any(json.loads(m["data"]) == {**json.loads(m["data"]), "job_id": job["id"], "status": "completed"} for m in messages):
        messages += [m for m in read_sse(resp, 1) if "data" in m]
    resp.close()
    conn.close()
    mine = [m for m in messages if json.loads(m["data"]).get("job_id") == job["id"]]
    assert [json.loads(m["data"])["status"] for m in mine] == ["queued", "running", "completed"]
    assert all(m["id"] == json.loads(m["data"])["id"] for m in mine) and "event" not in mine[0]
    # a new connection with Last-Event-ID = the first change's id starts right after it
    conn, resp = open_stream(cluster, f"?job_id={job['id']}", {"Last-Event-ID": mine[0]["id"]})
    resumed = [m for m in read_sse(resp, 3) if "data" in m and "event" not in m]
    resp.close()
    conn.close()
    assert [json.loads(m["data"])["status"] for m in resumed] == ["running", "completed"], resumed


def test_garbage_cursors_and_filters_are_400_and_an_expired_cursor_is_410(cluster):
    host = one_host(cluster)
    client_port = cluster.api_port
    token = cluster.token
    for query in ("cursor=abc", "cursor=-1", "cursor=1e5", "batch_id=nope", "job_id=1,2", "timeout=999", "timeout=x", "kind=jobs",
                  f"kind=batch&output=true&batch_id={uuid.uuid4()}"):  # fmt: skip
        reply = request("127.0.0.1", client_port, "GET", "/api/v1/events?" + query, token=token, timeout=10)
        assert reply.status == 400 and reply.json()["code"] == "VALIDATION_ERROR", (query, reply)
    assert request("127.0.0.1", client_port, "GET", "/api/v1/events?timeout=0", timeout=10).status == 401
    for _ in range(3):
        cluster.client().submit({"command": "true", "servers": [host]})[0]
    old = int(now_cursor(cluster)) - 2
    assert events.prune(0) > 0  # what the maintenance loop does after api.events_retention
    reply = request("127.0.0.1", client_port, "GET", f"/api/v1/events?cursor={old}&timeout=0", token=token, timeout=10)
    assert reply.status == 410 and reply.json()["code"] == "GONE" and "reload" in reply.json()["error"], reply
    future = int(now_cursor(cluster)) + 1000
    assert request("127.0.0.1", client_port, "GET", f"/api/v1/events?cursor={future}&timeout=0", token=token, timeout=10).status == 410
    kept = feed(cluster, cursor="0", timeout=0)["events"]  # cursor 0: from the oldest change kept, never 410
    assert kept and int(kept[0]["id"]) > old


def cli_requests(cluster: Cluster, token_name: str) -> list[str]:
    """The API's access-log lines of requests made with the token ``token_name``."""
    log = (cluster.base / "api1.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "remora.api.access" in line and f" {token_name} [req" in line]


def test_cli_wait_on_a_tag_makes_the_same_few_requests_for_5_or_20_hosts(cluster):
    """``submit --tag T --wait`` follows the feed: a fixed number of requests, not one poll per host."""
    name = "cli-" + uuid.uuid4().hex[:6]
    token = services.create_token(name, "admin", None)[1]  # local servers need admin (security.local_server_role)
    counts = {}
    for hosts in (5, 20):
        tag = f"c{hosts}" + uuid.uuid4().hex[:6]
        local_fleet(cluster.client(), hosts, tag)
        before = len(cli_requests(cluster, name))
        argv = ["submit", "--tag", tag, "--wait", "--api-url", cluster.api_url, "--token", token, "--", "sh", "-c", "sleep 0.5; echo out"]
        res = subprocess.run([sys.executable, "-m", "remora", *argv], env=cluster.env, capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr.decode()[-2000:]
        assert sorted(res.stdout.decode().splitlines()) == sorted(f"{tag}-{n} | out" for n in range(hosts))
        wait_for(lambda b=before: len(cli_requests(cluster, name)) - b >= 3, 10, 0.05, "the CLI's requests in the access log")
        counts[hosts] = len(cli_requests(cluster, name)) - before
    made = cli_requests(cluster, name)
    assert counts[5] == counts[20] == 3, (counts, made)  # submit, the feed, the batch's final states with output
    assert sum(1 for line in made if "/logs" in line) == 0, made
    assert not [line for line in made if "GET /api/v1/jobs" in line], made  # no job list: the batch view has the final states


class RecordingClient(Client):
    """The product's client, noting the ``kind`` of each change-feed stream it opens and each batch it reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kinds: list[str | None] = []
        self.batch_reads = 0

    def event_stream(self, *args: Any, **kwargs: Any) -> Any:
        self.kinds.append(kwargs.get("kind"))
        return super().event_stream(*args, **kwargs)

    def batch(self, *args: Any, **kwargs: Any) -> Any:
        self.batch_reads += 1
        return super().batch(*args, **kwargs)


def test_waiting_on_a_whole_new_batch_follows_only_its_end_and_a_part_of_one_follows_its_jobs(cluster):
    tag = "k" + uuid.uuid4().hex[:6]
    local_fleet(cluster.client(), 5, tag)
    for part in (5, 3):
        jobs = cluster.client().submit({"command": "sh", "args": ["-c", "sleep 0.3; echo out"], "servers": [f"tag:{tag}"]})
        client = RecordingClient(cluster.api_url, cluster.token, timeout=30)
        done = Watcher(client, jobs[:part], fresh=part == 5, timeout=60).run()
        assert [j["id"] for j in done] == [j["id"] for j in jobs[:part]]
        assert all(j["status"] == "completed" and j["exit_code"] == 0 for j in done), done
        # the whole batch just submitted: its own end is the one event needed; a part of one: its jobs' changes
        assert client.kinds == (["batch"] if part == 5 else [None]), client.kinds


def test_a_new_batch_that_ended_before_the_wait_began_is_read_once_at_its_end(cluster):
    """A whole batch just submitted is followed from cursor 0: its end is on the feed even when it came before the
    stream opened, so its state is not read first; the one read is its final states."""
    tag = "e" + uuid.uuid4().hex[:6]
    local_fleet(cluster.client(), 3, tag)
    jobs = cluster.client().submit({"command": "echo", "args": ["out"], "servers": [f"tag:{tag}"]})
    batch_id = jobs[0]["batch_id"]
    wait_for(lambda: cluster.client().batch(batch_id)["status"] == "completed", 30, 0.05, "the batch's end")
    client = RecordingClient(cluster.api_url, cluster.token, timeout=30)
    watcher = Watcher(client, jobs, fresh=True, timeout=30, with_output=True)  # as ``remora submit --wait`` does
    done = watcher.run()
    assert all(j["status"] == "completed" and j["exit_code"] == 0 for j in done), done
    assert sorted(h["stdout"] for h in (watcher.hosts or {}).values()) == ["out\n"] * 3, watcher.hosts
    assert client.kinds == ["batch"] and client.batch_reads == 1, (client.kinds, client.batch_reads)


def test_cli_follow_of_a_rollout_reads_every_hosts_output_off_the_feed_and_no_logs(cluster):
    """``submit --rollout 1 --follow``: hosts released one by one; all their output comes on the feed, no log is polled."""
    name = "fol-" + uuid.uuid4().hex[:6]
    token = services.create_token(name, "admin", None)[1]
    tag = "r" + uuid.uuid4().hex[:6]
    local_fleet(cluster.client(), 4, tag)
    argv = [
        "submit",
        "--tag",
        tag,
        "--rollout",
        "1",
        "--follow",
        "--api-url",
        cluster.api_url,
        "--token",
        token,
        "--",
        "sh",
        "-c",
        "sleep 1; echo out",
    ]
    res = subprocess.run([sys.executable, "-m", "remora", *argv], env=cluster.env, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert sorted(res.stdout.decode().splitlines()) == sorted(f"{tag}-{n} | out" for n in range(4))
    made = cli_requests(cluster, name)
    assert not [line for line in made if "/logs" in line] and len(made) <= 4, made


def test_watchers_are_capped_per_client_and_a_client_that_left_frees_its_slot_at_once(cluster):
    """16 API threads: at most 4 feeds per client address (a 5th is 429); closing one lets the next in without a timeout.

    The client here connects from 127.0.0.2: an address of its own, whatever other tests left open.
    """

    def get(stream: bool) -> tuple[http.client.HTTPConnection, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.api_port, timeout=20, source_address=("127.0.0.2", 0))
        accept = "text/event-stream" if stream else "application/json"
        path = "/api/v1/events" + ("" if stream else "?timeout=0")
        conn.request("GET", path, headers={"Accept": accept, "Authorization": f"Bearer {cluster.token}"})
        return conn, conn.getresponse()

    def done(conn: http.client.HTTPConnection, resp: Any) -> int:
        status = resp.status
        resp.close()
        conn.close()
        return int(status)

    streams = [get(stream=True) for _ in range(4)]
    try:
        for _, resp in streams:
            assert resp.status == 200 and read_sse(resp, 1)[0]["event"] == "ready"
        conn, resp = get(stream=False)
        body = resp.read()
        assert done(conn, resp) == 429 and b"change feed watchers" in body, body
        done(*streams.pop())
        began = time.monotonic()
        wait_for(lambda: done(*get(stream=False)) == 200, 10, 0.05, "a free watcher slot")
        assert time.monotonic() - began < 3  # noticed when the client left, not at the next 15 s heartbeat
    finally:
        for conn, resp in streams:
            done(conn, resp)


def test_a_long_poll_whose_client_left_frees_its_slot_at_once(cluster):
    """Four long-polls from one address fill its slots; closing one lets a fifth request in well before its 20 s timeout.

    The client connects from 127.0.0.3 (an address of its own). The long-polls follow a batch that does
    not exist: no change of the other tests' jobs answers them before their timeout.
    """
    headers = {"Authorization": f"Bearer {cluster.token}"}
    nothing = uuid.uuid4()

    def poll(timeout: int) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.api_port, timeout=30, source_address=("127.0.0.3", 0))
        conn.request("GET", f"/api/v1/events?timeout={timeout}&batch_id={nothing}", headers=headers)
        return conn

    def quick() -> int:
        conn = poll(0)
        try:
            resp = conn.getresponse()
            resp.read()
            return int(resp.status)
        finally:
            conn.close()

    waiting = [poll(20) for _ in range(4)]
    answered: list[int] = []  # a long-poll answered early (another client's watchers held every slot): sent again

    def held() -> bool:
        for n, conn in enumerate(waiting):
            if select.select([conn.sock], [], [], 0)[0]:
                resp = conn.getresponse()
                resp.read()
                answered.append(resp.status)
                conn.close()
                waiting[n] = poll(20)
        return quick() == 429

    try:
        wait_for(held, 10, 0.05, "the four long-polls holding their client's slots")
        waiting.pop().close()
        began = time.monotonic()
        wait_for(lambda: quick() == 200, 15, 0.05, "a free watcher slot")
        assert time.monotonic() - began < 3  # noticed when the client left, not at the poll's 20 s timeout
    finally:
        for conn in waiting:
            conn.close()
