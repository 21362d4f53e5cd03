"""``GET /api/v1/queue/monitor``: the dashboard's live queue view as Server-Sent Events through the API.

Each event is sent at once (not held in the server's buffers): three events arrive about a second apart.
A stream needs a viewer token like every other read, and holds a request thread, so streams are capped per
client address (429) and overall (503); a closed stream frees its place.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time

import pytest

from remora.netqueue.client import QueueClient
from tests.support.api import running_api
from tests.support.waits import wait_for


@pytest.fixture
def api(tmp_path):
    with running_api(tmp_path, **{"api.threads": 8}) as api:
        yield api


def open_monitor(api, token: str | None = "viewer") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {api.tokens.get(token, token)}"
    conn.request("GET", "/api/v1/queue/monitor", headers=headers)
    return conn.getresponse()


def next_event(resp: http.client.HTTPResponse) -> tuple[str, dict]:
    fields: dict[str, str] = {}
    while True:
        line = resp.readline().decode()
        if not line:
            raise EOFError
        if line == "\n":
            if fields:
                return fields.get("event", "message"), json.loads(fields["data"])
            continue
        key, _, value = line.rstrip("\n").partition(": ")
        fields[key] = value


def test_the_monitor_streams_queue_stats_and_workers_every_second(api):
    worker = QueueClient(api.settings.queue.addr, name="w")
    figures = {"cpu_seconds": 2.5, "rss_bytes": 40e6, "threads": 9, "open_files": 20, "ssh_connections": 2}
    worker.register_worker("mon-w1", host="box-1", concurrency=4, resources=figures)
    resp = open_monitor(api)
    try:
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        assert resp.getheader("Cache-Control") == "no-store"
        times, events = [], []
        for _ in range(3):
            events.append(next_event(resp))
            times.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.8 <= g <= 2.0 for g in gaps), gaps  # each event arrives as it is made, not buffered
        kind, first = events[0]
        assert kind == "monitor" and "queue_error" not in first
        assert first["stats"]["active_workers"] == 1 and first["stats"]["process"]["rss_bytes"] > 0
        (w,) = first["workers"]
        assert w["id"] == "mon-w1" and w["resources"] == figures
        assert first["api"]["process"]["threads"] >= 8
        worker.deregister_worker("mon-w1")
        wait_for(lambda: next_event(resp)[1]["workers"] == [], 5, 0, "the deregistered worker to leave the stream")
    finally:
        resp.close()
        worker.close()


def test_without_accept_event_stream_the_monitor_is_one_json_snapshot(api):
    reply = api.get("/api/v1/queue/monitor", token="viewer")
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    data = reply.json()
    assert data["stats"]["jobs"] == 0 and data["workers"] == [] and data["api"]["process"]["rss_bytes"] > 0
    assert api.server.app.monitors.busy == 0


def test_the_monitor_says_when_the_queue_is_down(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        resp = open_monitor(api)
        try:
            kind, data = next_event(resp)
        finally:
            resp.close()
    assert resp.status == 200 and kind == "monitor" and data["queue_error"] and "stats" not in data


def test_the_monitor_needs_a_token_and_is_capped_per_client(api):
    unauth = open_monitor(api, token=None)
    assert unauth.status == 401
    unauth.close()
    first, second = open_monitor(api), open_monitor(api)
    assert first.status == 200 and second.status == 200
    next_event(first), next_event(second)
    third = open_monitor(api)
    assert third.status == 429 and json.loads(third.read())["code"] == "TOO_MANY_REQUESTS"
    first.close()  # the server notices at its next event and frees the place

    def reopened() -> bool:
        resp = open_monitor(api)
        ok = resp.status == 200
        resp.close()
        return ok

    wait_for(reopened, 5, 0.2, "a closed monitor to free its place")
    second.close()
