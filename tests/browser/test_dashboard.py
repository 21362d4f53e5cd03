"""The dashboard in headless Chromium against a real Remora (queue, worker, API, sshd)."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.apiclient import call, key_server, ok, submit
from tests.browser.pages import shoot, signed_in
from tests.support.waits import wait_for

pytestmark = pytest.mark.browser


def test_sign_in_from_url_fragment_removes_token_and_keeps_it(page, remora_stack):
    signed_in(page, remora_stack, route="")
    assert "token=" not in page.url
    assert page.evaluate("localStorage.getItem('remora.token')") == remora_stack.token
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    assert page.url.endswith("#/jobs")
    page.reload()
    expect(page.locator("#topbar")).to_be_visible()
    page.click("#signout-btn")
    expect(page.locator("#token-input")).to_be_visible()
    page.fill("#token-input", "rmr_not-a-real-token")
    page.click("form.signin-card button[type=submit]")
    expect(page.locator("#token-error")).to_contain_text("not accepted")
    page.fill("#token-input", remora_stack.token)
    page.click("form.signin-card button[type=submit]")
    expect(page.locator("#topbar")).to_be_visible()


def test_revoked_or_unknown_token_returns_to_sign_in(page, remora_stack):
    page.goto(f"{remora_stack.url}/")
    page.evaluate("localStorage.setItem('remora.token', 'rmr_stale')")
    page.reload()
    expect(page.locator("#token-input")).to_be_visible()
    expect(page.locator("#token-error")).to_contain_text("Sign in again")


def test_viewer_token_gets_read_only_controls(page, remora_stack):
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method != "GET" else None)
    with page.expect_response(re.compile(r"/api/v1/auth/whoami$")) as whoami:
        page.goto(f"{remora_stack.url}/#token={remora_stack.viewer_token}")
    assert whoami.value.json()["role"] == "viewer"
    expect(page.locator("#ro-badge")).to_be_visible()
    assert "browser-viewer" in (page.locator("#signout-btn").get_attribute("title") or "")
    assert posts == [], posts  # the role comes from whoami, not from a probing cancel
    expect(page.locator("#new-job-btn")).to_be_hidden()
    page.evaluate("location.hash = '#/jobs'")
    expect(page.locator("#jobs-table, #jobs-empty")).not_to_have_count(0)
    assert page.locator("button[data-action=cancel]:visible").count() == 0


def test_runner_token_gets_read_only_controls(page, remora_stack):
    """A runner runs saved templates only: the dashboard offers it no free-form job and no cancel."""
    from remora import services

    _, runner = services.create_token(f"browser-runner-{uuid.uuid4().hex[:6]}", "runner")
    with page.expect_response(re.compile(r"/api/v1/auth/whoami$")) as whoami:
        page.goto(f"{remora_stack.url}/#token={runner}")
    assert whoami.value.json()["role"] == "runner"
    expect(page.locator("#ro-badge")).to_be_visible()
    expect(page.locator("#new-job-btn")).to_be_hidden()


def test_viewer_sees_masked_env_and_no_script_body(page, remora_stack):
    server_id = next(s["id"] for s in ok(remora_stack, "GET", "servers")["servers"] if s["name"] == "local")
    script = f"echo body-{uuid.uuid4().hex[:8]}"
    env = {"DB_PASSWORD": f"pw-{uuid.uuid4().hex}", "STAGE": "blue"}
    job = ok(remora_stack, "POST", "jobs/script", {"script": script, "env": env, "server_id": server_id})
    page.goto(f"{remora_stack.url}/#token={remora_stack.viewer_token}")
    expect(page.locator("#ro-badge")).to_be_visible()
    page.evaluate(f"location.hash = '#/jobs?job={job['id']}'")
    expect(page.locator("#jv-script")).to_contain_text("hidden")
    expect(page.locator("#jv-env")).to_have_text("DB_PASSWORD=***\nSTAGE=blue")
    html = page.content()
    assert script not in html and env["DB_PASSWORD"] not in html


def test_admin_token_has_write_controls(page, remora_stack):
    with page.expect_response(re.compile(r"/api/v1/auth/whoami$")) as whoami:
        signed_in(page, remora_stack)
    assert whoami.value.json() == {"name": "browser-admin", "role": "admin"}
    expect(page.locator("#new-job-btn")).to_be_visible()
    assert page.locator("#ro-badge").is_hidden()
    assert not page.evaluate("document.body.classList.contains('read-only')")


def test_add_key_server_and_test_connection(page, remora_stack, sshd):
    name = f"web-{uuid.uuid4().hex[:6]}"
    signed_in(page, remora_stack, route="servers")
    page.click("#add-server")
    page.fill("#sf-name", name)
    page.select_option("#sf-auth_type", "key")
    page.fill("#sf-hostname", sshd.host)
    page.fill("#sf-port", str(sshd.port))
    page.fill("#sf-user", sshd.user)
    page.fill("#sf-private_key", sshd.private_key)
    page.click("#server-save")
    row = page.locator(f"#servers-table tr[data-name='{name}']")
    expect(row).to_be_visible()
    row.locator("button[data-act=test]").click()
    expect(row.locator(".col-test")).to_contain_text(re.compile(r"connected in \d+ ms"), timeout=20_000)
    expect(row.locator(".fp")).to_contain_text("SHA256:")
    expect(row.locator(".dot-connected")).to_have_count(1)
    # Secrets are never shown back: the edit form offers to replace, not to read.
    row.locator("button[data-act=edit]").click()
    expect(page.locator("#sf-private_key")).to_have_value("")
    expect(page.locator("#sf-private_key")).to_have_attribute("placeholder", re.compile("stored"))
    assert sshd.private_key.splitlines()[1] not in page.content()
    shoot(page, "server_edit_form")


def test_server_form_shows_api_validation_next_to_field(page, remora_stack):
    signed_in(page, remora_stack, route="servers")
    page.click("#add-server")
    page.fill("#sf-name", f"nohost-{uuid.uuid4().hex[:6]}")
    page.select_option("#sf-auth_type", "password")
    page.fill("#sf-password", "pw")
    page.click("#server-save")
    expect(page.locator("#sf-hostname-error")).to_contain_text("required")
    expect(page.locator("#sf-hostname")).to_have_attribute("aria-invalid", "true")


def test_run_command_shows_output_live_before_it_finishes(page, remora_stack):
    job_gets: list[str] = []
    job_url = re.compile(r"/api/v1/jobs/[0-9a-f-]{36}(\?.*)?$")
    page.on("request", lambda r: job_gets.append(r.url) if r.method == "GET" and job_url.search(r.url) else None)
    signed_in(page, remora_stack, route="jobs")
    page.click("#new-job-btn")
    page.fill("#f-command", "for i in $(seq 1 20); do echo live-line-$i; sleep 0.2; done")
    page.locator("#f-servers label.pick", has_text="local").locator("input").check()
    page.click("#execute-submit")
    log = page.locator("#log-box pre[data-stream=combined]")
    expect(log).to_contain_text("live-line-2", timeout=15_000)
    # Output arrived while the job still runs.
    expect(page.locator("#jv-status")).to_contain_text("running")
    assert "live-line-20" not in log.inner_text()
    shoot(page, "job_view_live")
    expect(log).to_contain_text("live-line-20", timeout=15_000)
    expect(page.locator("#jv-status")).to_contain_text("completed")
    expect(page.locator("#jv-exit")).to_have_text("0")
    page.click("#tab-stderr")
    expect(page.locator("#jv-nooutput")).to_be_visible()
    # the panel polls the job without its output bodies (those come from /logs)
    assert len(job_gets) >= 2 and all(url.endswith("?output=false") for url in job_gets), job_gets


def test_script_with_tab_indent_and_validation_error_from_api(page, remora_stack):
    signed_in(page, remora_stack, route="jobs")
    page.keyboard.press("n")
    page.click("label.seg:has-text('Script')")
    page.click("#f-script")
    page.keyboard.type("for x in a b; do")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.type("echo script-$x")
    page.keyboard.press("Enter")
    page.keyboard.type("done")
    assert "\n  echo script-$x" in page.input_value("#f-script")
    # the shell choices and the timeout range come from the API's configuration
    assert page.locator("#f-shell option").all_inner_texts() == ["/bin/sh", "/bin/bash"]
    assert page.get_attribute("#f-timeout", "max") == "7200"
    expect(page.locator("#f-timeout-hint")).to_contain_text("7,200")
    page.locator("#f-servers label.pick", has_text="local").locator("input").check()
    page.fill("#f-timeout", "0")
    page.click("#execute-submit")
    expect(page.locator("#f-timeout-error")).not_to_be_empty()
    page.fill("#f-timeout", "30")
    page.click("#execute-submit")
    expect(page.locator("#log-box pre[data-stream=stdout]")).to_contain_text("script-b", timeout=15_000)


def test_cancel_running_job_from_the_table(page, remora_stack):
    job = submit(remora_stack, "sleep 60", name=f"to-cancel-{uuid.uuid4().hex[:6]}")
    wait_for(lambda: ok(remora_stack, "GET", f"jobs/{job['id']}")["status"] == "running", 15, what="job running")
    signed_in(page, remora_stack, route=f"jobs?search={job['name']}")
    row = page.locator(f"#jobs-table tr[data-id='{job['id']}']")
    expect(row.locator(".badge")).to_have_text("running")
    row.locator("button[data-action=cancel]").click()
    page.click("#confirm-dialog .btn.danger")
    expect(row.locator(".badge")).to_have_text("canceled", timeout=10_000)
    assert ok(remora_stack, "GET", f"jobs/{job['id']}")["status"] == "canceled"


def test_fan_out_to_two_servers_shows_each_result(page, remora_stack, sshd):
    tag = f"fan{uuid.uuid4().hex[:6]}"
    key_server(remora_stack, sshd, f"{tag}-a", [tag])
    key_server(remora_stack, sshd, f"{tag}-b", [tag])
    signed_in(page, remora_stack, route="jobs")
    page.click("#new-job-btn")
    page.fill("#f-command", "echo fanned-out-ok")
    page.click(f"button.chip:has-text('#{tag}')")
    expect(page.locator("#execute-submit")).to_have_text("Run on 2 servers")
    page.click("#execute-submit")
    tiles = page.locator("#host-matrix .hm-tile")
    expect(tiles).to_have_count(2, timeout=10_000)
    expect(page.locator("#host-matrix .hm-tile[data-status=completed]")).to_have_count(2, timeout=20_000)
    expect(page.locator("#bv-counts")).to_contain_text("2 completed")
    shoot(page, "batch_view")
    tiles.nth(1).click()
    expect(page.locator("#log-box pre[data-stream=stdout]")).to_contain_text("fanned-out-ok")


def test_filter_search_sort_and_pagination_live_in_the_url(page, remora_stack):
    marker = f"needle{uuid.uuid4().hex[:6]}"
    ok_job = submit(remora_stack, f"echo {marker}-ok")
    bad_job = submit(remora_stack, f"echo {marker}-bad; exit 3")
    for job in (ok_job, bad_job):
        wait_for(lambda j=job: ok(remora_stack, "GET", f"jobs/{j['id']}")["status"] in ("completed", "failed"), 15, what="job finished")
    signed_in(page, remora_stack, route="jobs")
    page.fill("#job-search", marker)
    rows = page.locator("#jobs-table tbody tr")
    expect(rows).to_have_count(2)
    assert f"search={marker}" in page.url
    page.select_option("#status-filter", "failed")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", bad_job["id"])
    expect(rows.first.locator(".col-exit")).to_have_text("3")
    assert "status=failed" in page.url
    # A shared link restores the same view.
    page.reload()
    expect(page.locator("#status-filter")).to_have_value("failed")
    expect(page.locator("#job-search")).to_have_value(marker)
    expect(rows).to_have_count(1)
    page.click("#clear-filters")
    page.select_option("#page-size", "50")
    assert "limit=50" in page.url
    page.click("button.sort[data-sort=priority]")
    assert "sort_by=priority" in page.url
    expect(page.locator("th[aria-sort=descending]")).to_have_count(1)


def test_table_updates_rows_in_place_and_keys_work(page, remora_stack):
    job = submit(remora_stack, "sleep 1.5; echo keyed", name=f"keyed-{uuid.uuid4().hex[:6]}")
    signed_in(page, remora_stack, route=f"jobs?search={job['name']}")
    row = page.locator(f"#jobs-table tr[data-id='{job['id']}']")
    expect(row).to_be_visible()
    row.evaluate("tr => { tr.dataset.marker = 'same-node'; }")
    expect(row.locator(".badge")).to_have_text("completed", timeout=15_000)
    assert row.get_attribute("data-marker") == "same-node", "the row was rebuilt instead of updated"
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("j")
    expect(row).to_have_class(re.compile("selected"))
    page.keyboard.press("Enter")
    expect(page.locator("#job-view")).to_be_visible()
    assert f"job={job['id']}" in page.url
    page.keyboard.press("Escape")
    expect(page.locator("#job-view")).to_have_count(0)
    page.keyboard.press("?")
    expect(page.locator("#help-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help-dialog")).to_have_count(0)
    page.keyboard.press("/")
    expect(page.locator("#job-search")).to_be_focused()


FAST_SCRIPT = """python3 -u - <<'END'
import time
for i in range(6000):
    print(f"fast-line-{i:05d}")
    if i % 100 == 99:
        time.sleep(0.1)
END
"""


def test_fast_output_stays_responsive_and_capped(page, remora_stack):
    """About 1,000 lines/s for 6 s: the view keeps up, stays responsive and caps its DOM."""
    server_id = next(s["id"] for s in ok(remora_stack, "GET", "servers")["servers"] if s["name"] == "local")
    job = ok(remora_stack, "POST", "jobs/script", {"script": FAST_SCRIPT, "shell": "/bin/bash", "server_id": server_id})
    signed_in(page, remora_stack, route=f"jobs?job={job['id']}")
    log = page.locator("#log-box pre[data-stream=combined]")
    expect(log).to_contain_text("fast-line-01000", timeout=15_000)
    lag = page.evaluate("() => new Promise(r => { const t = performance.now(); setTimeout(() => r(performance.now() - t), 0); })")
    assert lag < 200, f"the page's event loop lagged {lag:.0f} ms"
    expect(log).to_contain_text("fast-line-05999", timeout=20_000)
    expect(page.locator("#jv-status")).to_contain_text("completed")
    lines = page.evaluate("() => document.querySelector('#log-box pre[data-stream=combined]').textContent.split('\\n').length")
    assert lines <= 5200
    expect(page.locator("#jv-lognote")).to_contain_text("dropped")


def test_theme_toggle_is_persisted(page, remora_stack):
    signed_in(page, remora_stack, route="overview")
    before = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("#theme-btn")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    after = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert before != after
    shoot(page, "overview_dark")
    page.reload()
    expect(page.locator("#topbar")).to_be_visible()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.click("#theme-btn")
    assert page.evaluate("localStorage.getItem('remora.theme')") == "light"


def test_phone_sized_viewport(browser, remora_stack):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    try:
        submit(remora_stack, "echo phone")
        signed_in(pg, remora_stack, route="jobs")
        expect(pg.locator("#jobs-table tbody tr").first).to_be_visible()
        assert pg.evaluate("document.documentElement.scrollWidth") <= 375
        shoot(pg, "phone_jobs")
        pg.locator("#jobs-table tbody tr").first.click()
        expect(pg.locator("#job-view")).to_be_visible()
        box = pg.locator("#job-view").bounding_box()
        assert box and box["width"] <= 375
        shoot(pg, "phone_job_view")
        pg.keyboard.press("Escape")
        pg.click("#new-job-btn")
        expect(pg.locator("#execute-dialog")).to_be_visible()
        assert pg.evaluate("document.querySelector('#execute-dialog').getBoundingClientRect().width") <= 375
        shoot(pg, "phone_new_job")
    finally:
        context.close()


def test_queue_and_overview_pages_render(page, remora_stack):
    submit(remora_stack, "true")
    signed_in(page, remora_stack, route="queue")
    expect(page.locator("#queue-stats")).to_contain_text("workers")
    expect(page.locator("#workers")).to_contain_text(re.compile("Workers \\(\\d+\\)"))
    expect(page.locator(".bars .bar-row")).to_have_count(10)
    expect(page.locator("#dlq")).to_contain_text("Dead letters")
    shoot(page, "queue")
    job = submit(remora_stack, "true")
    wait_for(lambda: ok(remora_stack, "GET", f"jobs/{job['id']}")["status"] == "completed", timeout=15)
    lists: list[str] = []
    page.on("request", lambda r: lists.append(r.url) if "/api/v1/jobs?" in r.url else None)
    with page.expect_response(re.compile(r"/api/v1/system/timeline\?minutes=60$")) as timeline:
        page.evaluate("location.hash = '#/overview'")
    minutes = timeline.value.json()["minutes"]
    assert sum(m["completed"] for m in minutes) >= 1
    finished = sum(m["completed"] + m["failed"] + m["canceled"] for m in minutes)
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.locator("svg.chart rect.c-ok").first).to_be_attached()
    expect(page.locator("#chart-total")).to_contain_text(f"{finished:,} jobs")
    assert all("status=failed" in url for url in lists), lists  # only the recent-failures list, no paging through jobs
    expect(page.locator("#overview-stats")).to_contain_text("success rate")
    shoot(page, "overview")


def test_pem_upload_server_connects(page, remora_stack, sshd, tmp_path):
    name = f"pem-{uuid.uuid4().hex[:6]}"
    pem = tmp_path / f"{name}.pem"
    pem.write_text(sshd.private_key)
    signed_in(page, remora_stack, route="servers")
    page.click("#add-server")
    page.fill("#sf-name", name)
    page.select_option("#sf-auth_type", "pem")
    page.fill("#sf-hostname", sshd.host)
    page.fill("#sf-port", str(sshd.port))
    page.fill("#sf-user", sshd.user)
    page.set_input_files("#pem-input", str(pem))
    expect(page.locator("#pem-drop")).to_contain_text(f"{name}.pem uploaded")
    expect(page.locator("#sf-pem_file")).to_have_value(f"{name}.pem")
    page.click("#server-save")
    row = page.locator(f"#servers-table tr[data-name='{name}']")
    expect(row.locator(".col-auth")).to_contain_text(f"{name}.pem")
    row.locator("button[data-act=test]").click()
    expect(row.locator(".col-test")).to_contain_text(re.compile(r"connected in \d+ ms"), timeout=20_000)
    expect(page.locator("#pem-section")).to_contain_text(f"{name}.pem")
    assert "PRIVATE KEY" not in page.content()


def test_job_panel_changes_the_priority_of_a_queued_job(page, remora_stack):
    tag = uuid.uuid4().hex[:6]
    server = ok(
        remora_stack,
        "POST",
        "servers",
        {"name": f"one-at-a-time-{tag}", "hostname": "localhost", "user": "r", "auth_type": "local", "max_concurrent_jobs": 1},
    )
    busy = submit(remora_stack, "sleep 60", server_id=server["id"], name=f"busy-{tag}")
    wait_for(lambda: ok(remora_stack, "GET", f"jobs/{busy['id']}")["status"] == "running", 15, what="job running")
    waiting = submit(remora_stack, "true", server_id=server["id"], name=f"waiting-{tag}")  # the server is full: it stays queued
    try:
        signed_in(page, remora_stack, route=f"jobs?job={waiting['id']}")
        expect(page.locator("#jv-status")).to_contain_text("queued")
        expect(page.locator("#jv-priority")).to_have_value("5")
        page.select_option("#jv-priority", "2")
        wait_for(lambda: ok(remora_stack, "GET", f"jobs/{waiting['id']}")["priority"] == 2, 10, what="the new priority stored")
        ok(remora_stack, "POST", f"jobs/{busy['id']}/cancel")
        wait_for(lambda: ok(remora_stack, "GET", f"jobs/{waiting['id']}")["status"] == "completed", 15, what="the queued job to run")
        expect(page.locator("#jv-priority-box")).to_be_hidden(timeout=10_000)
    finally:
        call(remora_stack, "POST", f"jobs/{busy['id']}/cancel")


def test_queue_page_is_live_and_shows_resource_usage(page, remora_stack):
    """The queue page follows GET queue/monitor (fetch + Bearer, no EventSource): it says "live" and updates every second."""
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.headers.get("authorization", "")) if r.url.endswith("/api/v1/queue/monitor") else None)
    signed_in(page, remora_stack, route="queue")
    expect(page.locator("#queue-live")).to_have_text("live")
    assert streams and streams[0] == f"Bearer {remora_stack.token}"  # the token travels in the header, never in the URL
    row = page.locator("#workers tbody tr").first
    expect(row).to_contain_text(re.compile(r"\d+(\.\d+)? ?[KMG]i?B"))  # the worker's memory, from its heartbeat
    expect(page.locator("#workers thead")).to_contain_text("CPU time")
    expect(page.locator("#processes")).to_contain_text("queue server")
    expect(page.locator("#processes")).to_contain_text("API (this one)")
    from remora.netqueue.client import QueueClient

    settings = remora_stack.settings
    with QueueClient(settings.queue.addr, token=settings.queue_token, name="browser-test") as q:
        q.register_worker("live-w9", host="far-host", concurrency=1, resources={"rss_bytes": 3 * 2**20, "threads": 3})
        expect(page.locator("#workers")).to_contain_text("far-host", timeout=2500)  # pushed within a second, not polled every 3 s
        expect(page.locator("#workers")).to_contain_text("3.0 MB")
        q.deregister_worker("live-w9")
        expect(page.locator("#workers")).not_to_contain_text("far-host", timeout=2500)
    shoot(page, "queue_live")
    page.evaluate("location.hash = '#/overview'")  # leaving the page ends the stream
    wait_for(lambda: remora_stack.api.app.monitors.busy == 0, 10, 0.1, "the dashboard's monitor stream to close")
