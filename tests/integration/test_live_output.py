"""Live output on the change feed (``GET /api/v1/events?output=true``) and ``--follow`` on it.

Separate queue, API and worker processes (the output is written by the worker process, so it
reaches the API's feed through the database); jobs run on ``auth_type: local`` servers.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from remora import services
from remora.services import live_output
from tests.integration.test_events import cli_requests, read_sse
from tests.support.cluster import Cluster, local_fleet
from tests.support.http import request
from tests.support.waits import wait_for

COUNT_200 = "for i in $(seq 1 200); do echo $i; sleep 0.01; done"
EXPECTED_200 = "".join(f"{i}\n" for i in range(1, 201))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    stack = Cluster(tmp_path_factory.mktemp("liveout"))
    stack.start_queue()
    stack.start_api()
    stack.start_api("api2")  # a stream resumes on either API process
    stack.start_worker("w1", concurrency=24)
    stack.wait_workers(1)
    yield stack
    stack.stop()
    stack.close()


def fleet(cluster: Cluster, hosts: int) -> str:
    tag = "o" + uuid.uuid4().hex[:6]
    local_fleet(cluster.client(), hosts, tag)
    return tag


def submit(cluster: Cluster, tag: str, command: str, **fields: Any) -> tuple[str, list[str]]:
    reply = cluster.client().post("/api/v1/jobs", {"command": "sh", "args": f"-c '{command}'", "servers": [f"tag:{tag}"], **fields})
    return reply["batch_id"], [j["id"] for j in reply["jobs"]]


class Assembled:
    """Output events put together per job and stream, checking that each starts where the last one ended."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytearray] = {}
        self.events: list[dict[str, Any]] = []
        self.final: dict[str, int] = {}  # job id -> index in ``events`` of its final status

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["kind"] == "output":
            got = self.data.setdefault((event["job_id"], event["stream"]), bytearray())
            assert event["offset"] == len(got), ("gap or repeat", event["offset"], len(got))
            raw = base64.b64decode(event["data"]) if event.get("encoding") == "base64" else event["data"].encode()
            assert len(raw) == event["length"] <= live_output.MAX_EVENT_BYTES
            assert event["job_id"] not in self.final, "output after the job's final status"
            got += raw
        elif event["kind"] == "job" and event["status"] in ("completed", "failed", "canceled"):
            self.final[event["job_id"]] = len(self.events) - 1

    def text(self, job_id: str, stream: str = "stdout") -> str:
        return bytes(self.data.get((job_id, stream), b"")).decode()


def long_poll(cluster: Cluster, cursor: str, token: str | None = None, **params: Any) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in {"cursor": cursor, "output": "true", "timeout": 5, **params}.items())
    reply = request("127.0.0.1", cluster.api_port, "GET", "/api/v1/events?" + query, token=token or cluster.token, timeout=30)
    assert reply.status == 200, reply
    return reply.json()


def follow(cluster: Cluster, cursor: str, until: Any, seen: Assembled, timeout: float = 90, **params: Any) -> tuple[str, list[int]]:
    """Long-poll with output from ``cursor`` until ``until()``; the last cursor and each answer's output bytes."""
    deadline = time.monotonic() + timeout
    sizes = []
    while not until():
        assert time.monotonic() < deadline, seen.events[-5:]
        answer = long_poll(cluster, cursor, **params)
        assert answer["output"] is True
        for event in answer["events"]:
            seen.add(event)
        sizes.append(sum(e["length"] for e in answer["events"] if e["kind"] == "output"))
        cursor = answer["cursor"]
    return cursor, sizes


def test_five_hosts_printing_200_lines_over_time_arrive_complete_in_order_and_live(cluster):
    tag = fleet(cluster, 5)
    batch_id, job_ids = submit(cluster, tag, COUNT_200)
    seen = Assembled()
    _, sizes = follow(cluster, "0", lambda: len(seen.final) == 5, seen, batch_id=batch_id)
    for job_id in job_ids:
        assert seen.text(job_id) == EXPECTED_200
        assert seen.text(job_id, "stderr") == ""
        pieces = [e for e in seen.events if e["kind"] == "output" and e["job_id"] == job_id]
        assert len(pieces) >= 3, "the output came while the job ran, not all at its end"
        assert all(e["batch_id"] == batch_id for e in pieces)
    assert len([n for n in sizes if n]) >= 3


def test_a_stream_resumed_with_its_last_id_loses_and_repeats_nothing(cluster):
    """Server-Sent Events: the connection is dropped twice while 3 hosts print; Last-Event-ID resumes exactly, on the other API process."""
    tag = fleet(cluster, 3)
    batch_id, job_ids = submit(cluster, tag, COUNT_200)
    seen = Assembled()
    last = "0"
    drops = 0
    deadline = time.monotonic() + 90
    while len(seen.final) < 3:
        assert time.monotonic() < deadline
        conn = http.client.HTTPConnection("127.0.0.1", cluster.api_ports[drops % 2], timeout=20)
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {cluster.token}", "Last-Event-ID": last}
        conn.request("GET", f"/api/v1/events?batch_id={batch_id}&output=true", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        ready = read_sse(resp, 1)[0]
        assert ready["event"] == "ready" and ready["id"] == last and json.loads(ready["data"])["output"] is True
        outputs = 0
        while len(seen.final) < 3 and (drops >= 2 or outputs < 4):
            message = read_sse(resp, 1)[0]
            if "data" in message:
                answer = json.loads(message["data"])
                assert message["event"] == "events" and message["id"] == answer["cursor"]
                for event in answer["events"]:
                    seen.add(event)
                    outputs += event["kind"] == "output"
            if "id" in message:
                last = message["id"]
        resp.close()
        conn.close()
        drops += 1
    assert drops >= 3
    for job_id in job_ids:
        assert seen.text(job_id) == EXPECTED_200


def test_a_masked_secret_never_appears_in_output_events(cluster):
    tag = fleet(cluster, 1)
    secret = "s3cr3t-" + uuid.uuid4().hex
    batch_id, job_ids = submit(cluster, tag, 'echo "a $TOKEN b"; echo "$TOKEN" >&2', secret_env={"TOKEN": secret})
    seen = Assembled()
    follow(cluster, "0", lambda: len(seen.final) == 1, seen, batch_id=batch_id)
    assert seen.text(job_ids[0]) == "a *** b\n" and seen.text(job_ids[0], "stderr") == "***\n"
    assert secret not in json.dumps(seen.events)


def test_large_output_is_bounded_per_event_and_per_answer_and_its_status_follows_it(cluster):
    tag = fleet(cluster, 1)
    size = 3 * 1024 * 1024 + 17
    batch_id, job_ids = submit(cluster, tag, f'head -c {size} /dev/zero | tr "\\\\0" x; printf "\\\\377\\\\376" >&2')
    seen = Assembled()
    _, sizes = follow(cluster, "0", lambda: len(seen.final) == 1, seen, batch_id=batch_id)
    assert seen.text(job_ids[0]) == "x" * size
    assert bytes(seen.data[(job_ids[0], "stderr")]) == b"\xff\xfe"  # not UTF-8: base64
    assert any(e.get("encoding") == "base64" for e in seen.events)
    assert max(sizes) <= live_output.MAX_RESPONSE_BYTES and len([n for n in sizes if n]) >= 4, sizes


def test_bad_output_parameters_are_400(cluster):
    batch = str(uuid.uuid4())
    for query in (
        "output=maybe",
        "output=true",  # no filter
        f"output=true&batch_id={batch}&cursor=5~xyz",
        f"output=true&batch_id={batch}&cursor=5~abcdefabcdef:1",
        f"output=true&batch_id={batch}&cursor=~abcdefabcdef:1:2",
    ):
        reply = request("127.0.0.1", cluster.api_port, "GET", "/api/v1/events?timeout=0&" + query, token=cluster.token, timeout=10)
        assert reply.status == 400 and reply.json()["code"] == "VALIDATION_ERROR" and reply.json()["error"], (query, reply)


def run_cli(cluster: Cluster, token: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    cut = argv.index("--") if "--" in argv else len(argv)
    args = [sys.executable, "-m", "remora", *argv[:cut], "--api-url", cluster.api_url, "--token", token, *argv[cut:]]
    return subprocess.run(args, env=cluster.env, capture_output=True, timeout=180)


def test_cli_follow_on_a_tag_makes_the_same_few_requests_for_5_or_20_hosts(cluster):
    """``submit --tag T --follow``: every host's lines, prefixed, in order; a fixed number of requests and no log polls."""
    name = "flw-" + uuid.uuid4().hex[:6]
    token = services.create_token(name, "admin", None)[1]
    counts = {}
    for hosts in (5, 20):
        tag = fleet(cluster, hosts)
        before = len(cli_requests(cluster, name))
        res = run_cli(
            cluster, token, "submit", "--tag", tag, "--follow", "--", "sh", "-c", "for i in $(seq 1 50); do echo $i; sleep 0.01; done"
        )
        assert res.returncode == 0, res.stderr.decode()[-2000:]
        lines = res.stdout.decode().splitlines()
        for n in range(hosts):
            assert [line.split(" | ", 1)[1] for line in lines if line.startswith(f"{tag}-{n} | ")] == [str(i) for i in range(1, 51)]
        assert len(lines) == 50 * hosts
        counts[hosts] = len(cli_requests(cluster, name)) - before
    made = cli_requests(cluster, name)
    assert counts[5] == counts[20] == 3, (counts, made)  # submit, the stream, the batch's jobs
    assert not [line for line in made if "/logs" in line], made


def test_cli_follow_exit_code_and_stderr_of_a_failing_host(cluster):
    name = "fle-" + uuid.uuid4().hex[:6]
    token = services.create_token(name, "admin", None)[1]
    tag = fleet(cluster, 2)
    res = run_cli(
        cluster, token, "submit", "--tag", tag, "--follow", "--", "sh", "-c", 'echo out; echo err >&2; [ "$(hostname)" = x ] || exit 3'
    )
    assert res.returncode == 3, res.stderr.decode()
    assert sorted(res.stdout.decode().splitlines()) == [f"{tag}-0 | out", f"{tag}-1 | out"]
    assert f"{tag}-0 | err" in res.stderr.decode() and f"{tag}-1 | err" in res.stderr.decode()


def test_jobs_logs_follow_reads_the_feed_and_a_finished_job_its_log(cluster):
    name = "fll-" + uuid.uuid4().hex[:6]
    token = services.create_token(name, "admin", None)[1]
    tag = fleet(cluster, 1)
    _, job_ids = submit(cluster, tag, "for i in $(seq 1 30); do echo $i; sleep 0.05; done; printf tail")
    res = run_cli(cluster, token, "jobs", "logs", job_ids[0], "--follow")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode() == "".join(f"{i}\n" for i in range(1, 31)) + "tail"
    assert not [line for line in cli_requests(cluster, name) if "/logs" in line]
    again = run_cli(cluster, token, "jobs", "logs", job_ids[0], "--follow")  # finished: read from its log
    assert again.returncode == 0 and again.stdout == res.stdout


class OlderApi:
    """A loopback proxy to the cluster's API that drops ``output`` from feed requests: an API from before output events."""

    def __init__(self, port: int) -> None:
        upstream = port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                query = [(k, v) for k, v in parse_qsl(url.query) if not (url.path == "/api/v1/events" and k == "output")]
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
                conn.request(self.command, url.path + ("?" + urlencode(query) if query else ""), body=body or None, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                with contextlib.suppress(OSError, http.client.HTTPException):  # the client left mid-stream
                    while chunk := resp.read1(65536):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                conn.close()
                self.close_connection = True

            do_GET = do_POST = forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cli_follow_against_an_api_without_output_events_polls_the_logs_as_before(cluster):
    name = "old-" + uuid.uuid4().hex[:6]
    token = services.create_token(name, "admin", None)[1]
    tag = fleet(cluster, 3)
    older = OlderApi(cluster.api_port)
    try:
        argv = ["submit", "--tag", tag, "--follow", "--api-url", older.url, "--token", token, "--", "sh", "-c", "echo a; sleep 0.3; echo b"]
        res = subprocess.run([sys.executable, "-m", "remora", *argv], env=cluster.env, capture_output=True, timeout=120)
    finally:
        older.stop()
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert sorted(res.stdout.decode().splitlines()) == sorted(f"{tag}-{n} | {x}" for n in range(3) for x in "ab")
    assert [line for line in cli_requests(cluster, name) if "/logs" in line], "the logs were polled"


def test_a_character_split_between_two_writes_waits_for_its_other_bytes(cluster):
    """The euro sign's first two bytes are stored a second before its last: the events carry text, never a broken character."""
    tag = fleet(cluster, 1)
    batch_id, job_ids = submit(cluster, tag, r'printf "a\342\202"; sleep 2; printf "\254b\n"')
    seen = Assembled()
    follow(cluster, "0", lambda: len(seen.final) == 1, seen, batch_id=batch_id)
    assert seen.text(job_ids[0]) == "a\u20acb\n"
    pieces = [e for e in seen.events if e["kind"] == "output"]
    assert all("encoding" not in e for e in pieces) and pieces[0]["data"] == "a", pieces


def test_a_jobs_stdout_and_stderr_come_in_the_order_it_wrote_them(cluster):
    """Read after the job ended, in one answer: its stderr and stdout lines alternate as stored, stderr first."""
    tag = fleet(cluster, 1)
    batch_id, job_ids = submit(cluster, tag, "for i in 1 2 3 4 5; do echo err$i >&2; sleep 0.05; echo out$i; sleep 0.05; done")
    wait_for(lambda: cluster.client().job(job_ids[0])["status"] == "completed", 30, 0.05, "the job to end")
    answer = long_poll(cluster, "0", batch_id=batch_id)
    got = [(e["stream"], line) for e in answer["events"] if e["kind"] == "output" for line in e["data"].splitlines()]
    logs = cluster.client().job_logs(job_ids[0])  # the log endpoint's combined view: the order the chunks were stored
    stored = [(p["stream"], line) for p in logs["pieces"] for line in p["text"].splitlines()]
    assert got == stored and got[0] == ("stderr", "err1") and len(got) == 10, got
