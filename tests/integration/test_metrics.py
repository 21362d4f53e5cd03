"""``/metrics`` on the API and on the queue port, parsed with the reference Prometheus text parser."""

from __future__ import annotations

import datetime as dt
import http.client
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remora import models
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from tests.support.api import running_api

TOKEN = "metrics-queue-token"


def parse(text: str) -> dict[str, dict]:
    """{family name: {"type", "samples": [(name, labels, value)]}}; every family has HELP and TYPE."""
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        families[family.name] = {"type": family.type, "samples": [(s.name, s.labels, s.value) for s in family.samples]}
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert declared, text[:500]
    return families


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    for name, got, val in families[family]["samples"]:
        if name == (sample or family) and all(got.get(k) == v for k, v in labels.items()):
            return val
    raise AssertionError(f"no sample {sample or family}{labels} in {families[family]['samples'][:10]}")


def get(host: str, port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def api(tmp_path):
    with running_api(tmp_path) as api:
        yield api


def test_api_metrics_cover_jobs_durations_queue_workers_and_http(api):
    local = api.local_server_id()
    ids = [
        api.post("/api/v1/jobs", {"command": "echo", "args": str(i), "server_id": local, "priority": 1 + i % 3}).json()["id"]
        for i in range(5)
    ]
    now = models.utcnow()
    models.Job.update(status="completed", started_at=now - dt.timedelta(seconds=2), finished_at=now).where(
        models.Job.id == ids[0]
    ).execute()
    models.Job.update(status="failed", started_at=now - dt.timedelta(seconds=40), finished_at=now).where(models.Job.id == ids[1]).execute()
    assert api.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000").status == 404
    worker = QueueClient(api.settings.queue.addr, name="w")
    worker.register_worker("metrics-w1", host="box-1", concurrency=3)
    worker.reserve(["job_queue"], timeout=0.1, worker_id="metrics-w1")

    status, kind, text = get(api.host, api.port, "/metrics", api.tokens["viewer"])
    worker.close()
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    fams = parse(text)
    assert value(fams, "remora_jobs", status="queued") == 3
    assert value(fams, "remora_jobs", status="completed") == 1
    assert fams["remora_job_duration_seconds"]["type"] == "histogram"
    assert value(fams, "remora_job_duration_seconds", "remora_job_duration_seconds_count") == 2
    assert value(fams, "remora_job_duration_seconds", "remora_job_duration_seconds_bucket", le="5.0") == 1
    assert value(fams, "remora_job_duration_seconds", "remora_job_duration_seconds_bucket", le="+Inf") == 2
    assert value(fams, "remora_jobs_finished_recent", status="failed") == 1
    assert value(fams, "remora_queue_up") == 1
    assert value(fams, "remora_queue_depth") == 4  # five put, one reserved by the worker (the DB edits do not touch the queue)
    assert sum(v for _, _, v in fams["remora_queue_priority_depth"]["samples"]) == 4
    assert value(fams, "remora_workers_active") == 1
    assert 0 <= value(fams, "remora_worker_heartbeat_age_seconds", worker="metrics-w1", host="box-1") < 5
    assert value(fams, "remora_worker_running_jobs", worker="metrics-w1") == 1
    assert value(fams, "remora_http_requests", "remora_http_requests_total", route="submit_job", method="POST", code="201") == 5
    assert value(fams, "remora_http_requests", "remora_http_requests_total", route="get_job", code="404") == 1
    assert fams["remora_http_request_duration_seconds"]["type"] == "histogram"


def test_api_metrics_say_when_the_queue_is_down(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        status, _, text = get(api.host, api.port, "/metrics", api.tokens["viewer"])
    fams = parse(text)
    assert status == 200 and value(fams, "remora_queue_up") == 0
    assert "remora_worker_heartbeat_age_seconds" not in fams


def test_api_metrics_need_a_token(api):
    assert get(api.host, api.port, "/metrics")[0] == 401


@pytest.fixture
def queue(tmp_path):
    server = QueueServer(host="127.0.0.1", port=0, data_dir=tmp_path / "q", fsync="never", token=TOKEN)
    server.start()
    yield server
    server.stop()


def test_queue_metrics_on_its_own_port(queue):
    host, port = queue.address
    client = QueueClient(f"{host}:{port}", token=TOKEN, name="t")
    for i in range(6):
        client.put(f"job-{i}", priority=1 if i < 2 else 7)
    client.put("other-1", queue="deploys")
    client.register_worker("qw-1", host="box-9", concurrency=4)
    held = client.reserve(["job_queue"], timeout=1, worker_id="qw-1")
    client.ack(held[0].id)
    (started,) = client.reserve(["job_queue"], timeout=1, worker_id="qw-1")
    client.start([started.id], worker_id="qw-1")  # else closing the connection hands it back
    client.close()

    assert get(host, port, "/metrics")[0] == 401  # with a token, only /health is open
    status, kind, text = get(host, port, "/metrics", TOKEN)
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    fams = parse(text)
    assert value(fams, "netqueue_up") == 1
    assert value(fams, "netqueue_depth") == 5
    assert value(fams, "netqueue_jobs", queue="job_queue", state="ready") == 4
    assert value(fams, "netqueue_jobs", queue="job_queue", state="reserved") == 1
    assert value(fams, "netqueue_jobs", queue="deploys", state="ready") == 1
    assert value(fams, "netqueue_priority_depth", priority="7") == 4
    assert value(fams, "netqueue_priority_depth", priority="5") == 1
    assert value(fams, "netqueue_events", "netqueue_events_total", event="put") == 7
    assert value(fams, "netqueue_events", "netqueue_events_total", event="acked") == 1
    assert value(fams, "netqueue_active_workers") == 1
    assert 0 <= value(fams, "netqueue_worker_heartbeat_age_seconds", worker="qw-1", host="box-9") < 5
    assert value(fams, "netqueue_worker_jobs_held", worker="qw-1") == 1
    assert value(fams, "netqueue_worker_jobs_done", "netqueue_worker_jobs_done_total", worker="qw-1") == 1
    assert value(fams, "netqueue_wal_bytes") > 0
    later = queue.stats()["server"]  # counters only grow: the scrape's figures are at most these
    assert 0 <= value(fams, "netqueue_spin_hits", "netqueue_spin_hits_total") <= later["spin_hits"]
    assert 0 <= value(fams, "netqueue_spin_misses", "netqueue_spin_misses_total") <= later["spin_misses"]
    assert get(host, port, "/metrics", TOKEN, method="HEAD")[:2] == (200, kind)


FIGURES = {"cpu_seconds": 3.5, "rss_bytes": 50e6, "threads": 11, "open_files": 17, "ssh_connections": 4}


def test_resource_usage_of_workers_queue_and_api_on_both_metrics_endpoints(api, queue):
    host, port = queue.address
    for addr, token in ((api.settings.queue.addr, ""), (f"{host}:{port}", TOKEN)):
        with QueueClient(addr, token=token, name="w") as worker:
            worker.register_worker("res-w1", host="box-3", concurrency=2, resources=FIGURES)
            worker.register_worker("old-w2", host="box-4", concurrency=1)  # an older worker: no figures, no samples

    status, _, text = get(api.host, api.port, "/metrics", api.tokens["viewer"])
    fams = parse(text)
    assert status == 200
    labels = {"worker": "res-w1", "host": "box-3"}
    assert value(fams, "remora_worker_cpu_seconds", **labels) == 3.5
    assert value(fams, "remora_worker_resident_memory_bytes", **labels) == 50e6
    assert value(fams, "remora_worker_threads", **labels) == 11
    assert value(fams, "remora_worker_open_files", **labels) == 17
    assert value(fams, "remora_worker_ssh_connections", **labels) == 4
    assert all(s[1]["worker"] != "old-w2" for s in fams["remora_worker_threads"]["samples"])
    assert value(fams, "remora_api_process_resident_memory_bytes") > 1e6
    assert value(fams, "remora_api_process_threads") >= 8  # waitress's request threads at least
    assert value(fams, "remora_api_process_open_files") > 3 and value(fams, "remora_api_process_cpu_seconds") > 0
    assert value(fams, "remora_queue_process_resident_memory_bytes") > 1e6  # the queue's own figures, from its STATS

    fams = parse(get(host, port, "/metrics", TOKEN)[2])
    assert value(fams, "netqueue_worker_resident_memory_bytes", worker="res-w1", host="box-3") == 50e6
    assert value(fams, "netqueue_worker_ssh_connections", worker="res-w1", host="box-3") == 4
    assert value(fams, "netqueue_process_resident_memory_bytes") > 1e6 and value(fams, "netqueue_process_threads") >= 2
    assert value(fams, "netqueue_monitor_streams") == 0


def test_alert_rules_use_metric_names_that_exist(api, queue):
    import re

    import yaml

    host, port = queue.address
    client = QueueClient(f"{host}:{port}", token=TOKEN, name="t")
    client.register_worker("w", host="h", concurrency=1)
    client.close()
    assert api.get("/api/v1/system/info").status == 200  # so the HTTP families have a sample
    names = set()
    for text in (get(api.host, api.port, "/metrics", api.tokens["viewer"])[2], get(host, port, "/metrics", TOKEN)[2]):
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\b(?:remora|netqueue)_[a-z_]+\b", expr)}
    assert len(exprs) >= 5 and used
    assert used <= names, used - names


def test_api_metrics_escape_label_values(api):
    """A worker id and host with a quote, a backslash and a newline come back intact through the reference parser."""
    worker_id, host = 'w"1\nsecond line', 'box\\9\n"quoted"'
    worker = QueueClient(api.settings.queue.addr, name="w")
    worker.register_worker(worker_id, host=host, concurrency=1)
    try:
        status, _, text = get(api.host, api.port, "/metrics", api.tokens["viewer"])
    finally:
        worker.close()
    assert status == 200
    assert "\nsecond line" not in text  # one sample per line: the newline is escaped as \n
    fams = parse(text)
    assert 0 <= value(fams, "remora_worker_heartbeat_age_seconds", worker=worker_id, host=host) < 5
    assert value(fams, "remora_worker_running_jobs", worker=worker_id) == 0
