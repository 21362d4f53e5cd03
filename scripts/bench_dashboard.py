#!/usr/bin/env python3
"""Dashboard benchmark: first paint of the jobs page and API CPU under polling tabs.

1. Fills a fresh SQLite database with N jobs (default 100,000).
2. Starts NetQueue + the API in a child process (so its CPU can be measured alone).
3. Headless Chromium opens the jobs page R times in fresh profiles and records
   first contentful paint and the moment the first rows are painted.
4. T tabs (default 10) sit on the jobs page, polling every 2 s; the child's CPU
   is read from /proc over S seconds, once idle (nothing changes: 304s) and once
   while a job changes every second (full answers).

Prints one JSON object.  Targets: first rows painted < 300 ms; API CPU < 10 %
of one core with 10 tabs.

Example: .venv/bin/python scripts/bench_dashboard.py --jobs 100000 --tabs 10 --seconds 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CHILD = r"""
import json, sys, time
from remora import config, models
from remora.api.server import APIServer
from remora.netqueue.server import QueueServer
data_dir = sys.argv[1]
overrides = {"database.data_dir": data_dir, "queue.addr": "127.0.0.1:0", "queue.fsync": "never"}
settings = config.load(None, env={}, overrides=overrides)
models.init_db(settings.database_url)
queue = QueueServer.from_settings(settings, host="127.0.0.1", port=0)
queue.start()
settings = config.load(None, env={}, overrides={**overrides, "queue.addr": f"127.0.0.1:{queue.address[1]}"})
api = APIServer(settings, host="127.0.0.1", port=0)
api.start()
print(json.dumps({"url": "http://%s:%d" % api.address}), flush=True)
sys.stdin.read()
api.stop()
queue.stop()
"""

# Recorded in the page: when the first job rows were painted.
INIT_SCRIPT = """
localStorage.setItem('remora.token', %s);
new MutationObserver((_, obs) => {
  if (document.querySelector('#jobs-table tbody tr')) {
    obs.disconnect();
    window.__rowsInDom = performance.now();
    requestAnimationFrame(() => setTimeout(() => { window.__rowsPainted = performance.now(); }, 0));
  }
}).observe(document, {childList: true, subtree: true});
"""

STATUSES = ["completed"] * 70 + ["failed"] * 20 + ["canceled"] * 8 + ["running", "queued"]


def fill(data_dir: Path, jobs: int) -> str:
    """Create the database with ``jobs`` jobs over the last day and an admin token; return the token."""
    from remora import config, models, services

    settings = config.load(None, env={}, overrides={"database.data_dir": str(data_dir)})
    models.init_db(settings.database_url)
    services.ensure_local_server()
    servers = [
        models.Server.create(name=f"web-{i:02d}", hostname=f"10.0.0.{i}", user="deploy", auth_type="key", tags=["web"]) for i in range(20)
    ]
    now = models.utcnow()
    rng = random.Random(7)
    rows = []
    for i in range(jobs):
        status = rng.choice(STATUSES)
        created = now - dt.timedelta(seconds=(jobs - i) * 86400 / jobs)
        started = created + dt.timedelta(seconds=rng.random() * 3)
        finished = started + dt.timedelta(seconds=rng.random() * 30) if status not in ("running", "queued") else None
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "command": rng.choice(["uptime", "df -h", "systemctl restart nginx", "apt-get update", "./deploy.sh"]),
                "args": "",
                "server": rng.choice(servers).id,
                "status": status,
                "priority": rng.randint(1, 10),
                "exit_code": 0 if status == "completed" else (rng.randint(1, 3) if status == "failed" else None),
                "created_at": created,
                "updated_at": finished or started,
                "started_at": started if status != "queued" else None,
                "finished_at": finished,
            }
        )
    with models.write_transaction():
        for start in range(0, len(rows), 500):
            models.Job.insert_many(rows[start : start + 500]).execute()
    _, token = services.create_token(f"bench-{uuid.uuid4().hex[:6]}", "admin")
    models.database_proxy.close()
    return token


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_latency(url: str, token: str, n: int = 20) -> dict[str, float]:
    def get(etag: str | None = None) -> tuple[float, str]:
        req = urllib.request.Request(f"{url}/api/v1/jobs?page=1&limit=20&sort_by=created_at&sort_order=desc")
        req.add_header("Authorization", f"Bearer {token}")
        if etag:
            req.add_header("If-None-Match", etag)
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                res.read()
                tag = res.headers.get("ETag", "")
        except urllib.error.HTTPError as exc:  # 304
            tag = exc.headers.get("ETag", "")
        return (time.perf_counter() - t) * 1000, tag

    full = [get()[0] for _ in range(n)]
    _, tag = get()
    cond = [get(tag)[0] for _ in range(n)]
    return {"jobs_list_200_median_ms": round(statistics.median(full), 1), "jobs_list_304_median_ms": round(statistics.median(cond), 1)}


def first_paint(browser: Any, url: str, token: str, runs: int) -> dict[str, Any]:
    results = []
    for i in range(runs + 1):  # the first run warms the OS caches and is dropped
        ctx = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)  # wait_for_function evals a string
        ctx.add_init_script(INIT_SCRIPT % json.dumps(token))
        page = ctx.new_page()
        page.goto(f"{url}/#/jobs")
        page.wait_for_function("window.__rowsPainted !== undefined", timeout=30_000)
        data = page.evaluate(
            "() => ({rows: window.__rowsInDom, painted: window.__rowsPainted,"
            " fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,"
            " count: document.querySelectorAll('#jobs-table tbody tr').length})"
        )
        ctx.close()
        if i:
            results.append(data)
    return {
        "runs": runs,
        "first_contentful_paint_ms_median": round(statistics.median(r["fcp"] for r in results), 1),
        "jobs_rows_painted_ms_median": round(statistics.median(r["painted"] for r in results), 1),
        "jobs_rows_painted_ms_max": round(max(r["painted"] for r in results), 1),
        "rows_shown": results[-1]["count"],
    }


def polling_cpu(browser: Any, url: str, token: str, pid: int, tabs: int, seconds: float, data_dir: Path, churn: bool) -> dict[str, Any]:
    counts = {"200": 0, "304": 0, "other": 0}

    def on_response(res: Any) -> None:
        if "/api/v1/jobs?" in res.url:
            key = str(res.status) if res.status in (200, 304) else "other"
            counts[key] += 1

    contexts = []
    for _ in range(tabs):
        ctx = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)  # wait_for_function evals a string
        ctx.add_init_script(INIT_SCRIPT % json.dumps(token))
        page = ctx.new_page()
        page.on("response", on_response)
        page.goto(f"{url}/#/jobs")
        page.wait_for_function("window.__rowsPainted !== undefined", timeout=30_000)
        contexts.append((ctx, page))
    visible = sum(p.evaluate("document.visibilityState") == "visible" for _, p in contexts)
    time.sleep(2.5)  # let the first polls settle
    for key in counts:
        counts[key] = 0
    writer = None
    if churn:
        writer = subprocess.Popen(
            [sys.executable, "-c", CHURN, str(data_dir), str(seconds)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        contexts[0][1].wait_for_timeout(200)  # keeps Playwright's event loop serving the response events
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    if writer:
        writer.wait(timeout=30)
    for ctx, _ in contexts:
        ctx.close()
    return {
        "tabs": tabs,
        "tabs_visible": visible,
        "seconds": round(t1 - t0, 1),
        "api_cpu_percent_of_one_core": round((cpu1 - cpu0) / (t1 - t0) * 100, 2),
        "list_requests": dict(counts),
    }


# Changes one job per second (a finished job gets a new updated_at), so every poll gets a fresh answer.
CHURN = r"""
import sys, time
from remora import config, models
settings = config.load(None, env={}, overrides={"database.data_dir": sys.argv[1]})
models.init_db(settings.database_url)
end = time.monotonic() + float(sys.argv[2])
ids = [j.id for j in models.Job.select(models.Job.id).order_by(models.Job.created_at.desc()).limit(20)]
i = 0
while time.monotonic() < end:
    with models.write_transaction():
        models.Job.update(updated_at=models.utcnow(), priority=(i % 10) + 1).where(models.Job.id == ids[i % len(ids)]).execute()
    i += 1
    time.sleep(1.0)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--tabs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="(default) print one JSON object")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        print(json.dumps({"error": f"{CHROMIUM} not found (apt-get install chromium)"}))
        return 2
    from playwright.sync_api import sync_playwright

    static = REPO / "remora" / "api" / "static"
    out: dict[str, Any] = {"jobs_in_db": args.jobs, "static_bytes": sum(p.stat().st_size for p in static.iterdir() if p.is_file())}
    with tempfile.TemporaryDirectory(prefix="remora-bench-dash-") as tmp:
        data_dir = Path(tmp)
        t = time.perf_counter()
        token = fill(data_dir, args.jobs)
        out["fill_seconds"] = round(time.perf_counter() - t, 1)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            url = json.loads(child.stdout.readline())["url"]
            out["api"] = api_latency(url, token)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                out["first_paint"] = first_paint(browser, url, token, args.runs)
                out["polling_idle"] = polling_cpu(browser, url, token, child.pid, args.tabs, args.seconds, data_dir, churn=False)
                out["polling_changing"] = polling_cpu(browser, url, token, child.pid, args.tabs, args.seconds, data_dir, churn=True)
                browser.close()
        finally:
            child.stdin.close()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    out["targets"] = {
        "first_paint_under_300ms": out["first_paint"]["jobs_rows_painted_ms_median"] < 300,
        "api_cpu_idle_under_10pct": out["polling_idle"]["api_cpu_percent_of_one_core"] < 10,
        "api_cpu_changing_under_10pct": out["polling_changing"]["api_cpu_percent_of_one_core"] < 10,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
