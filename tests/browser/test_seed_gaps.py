"""The dashboard's combined log order, queue running card, API console and debug panel against a real Remora."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.apiclient import ok, submit
from tests.browser.pages import shoot, signed_in
from tests.support.waits import wait_for

pytestmark = pytest.mark.browser

ALTERNATING = "for i in 1 2 3 4 5 6; do echo out-$i; sleep 0.15; echo err-$i >&2; sleep 0.15; done"


def _finished(stack, job_id: str) -> dict:
    return wait_for(lambda: (j := ok(stack, "GET", f"jobs/{job_id}?output=false"))["status"] in ("completed", "failed") and j, timeout=30)


def test_combined_tab_interleaves_streams_as_the_job_wrote(page, remora_stack):
    job = submit(remora_stack, ALTERNATING)
    _finished(remora_stack, job["id"])
    expected = "".join(f"out-{i}\nerr-{i}\n" for i in range(1, 7))
    assert ok(remora_stack, "GET", f"jobs/{job['id']}/logs")["output"] == expected  # the order the job wrote
    signed_in(page, remora_stack, route=f"jobs?job={job['id']}")
    log = page.locator("#log-box pre[data-stream=combined]")
    expect(log).to_contain_text("err-6")
    assert log.inner_text() == expected, log.inner_text()
    assert log.locator("span.err").first.inner_text().startswith("err-1")
    page.click("#tab-stdout")
    expect(page.locator("#log-box pre[data-stream=stdout]")).to_have_text("".join(f"out-{i}\n" for i in range(1, 7)))
    shoot(page, "combined_interleaved")


def test_running_card_shows_jobs_running_now(page, remora_stack):
    for _ in range(3):  # finished jobs count in the queue's lifetime totals, never as running
        _finished(remora_stack, submit(remora_stack, "true")["id"])
    marker = uuid.uuid4().hex[:8]
    job = submit(remora_stack, f"sleep 30 # {marker}")
    try:
        wait_for(lambda: ok(remora_stack, "GET", "system/info")["running_jobs"] >= 1, timeout=20)
        signed_in(page, remora_stack, route="queue")
        card = page.locator("#queue-stats .stat", has=page.locator(".stat-label", has_text=re.compile("^running$")))
        expect(card).to_have_count(1)
        running = ok(remora_stack, "GET", "system/info")["running_jobs"]
        expect(card.locator(".stat-value")).to_have_text(str(running))
    finally:
        ok(remora_stack, "POST", f"jobs/{job['id']}/cancel")
    _finished_or_canceled = wait_for(
        lambda: ok(remora_stack, "GET", f"jobs/{job['id']}?output=false")["status"] in ("canceled", "failed", "completed"), timeout=30
    )
    assert _finished_or_canceled
    wait_for(lambda: ok(remora_stack, "GET", "system/info")["running_jobs"] == 0, timeout=20)
    expect(card.locator(".stat-value")).to_have_text("0", timeout=10_000)


def test_api_console_sends_a_request_and_shows_the_curl_line(page, remora_stack):
    signed_in(page, remora_stack, route="console")
    expect(page.locator("#console-role")).to_have_text("Your role: admin")
    page.fill("#console-filter", "system/info")
    page.locator("button.console-op[data-op=system_info]").click()
    curl = page.locator("#console-curl")
    expect(curl).to_contain_text(f"curl -sS -i '{remora_stack.url}/api/v1/system/info'")
    expect(curl).to_contain_text("'Authorization: Bearer ***'")
    assert remora_stack.token not in curl.inner_text()
    with page.expect_response(re.compile(r"/api/v1/system/info$")) as sent:
        page.click("#console-send")
    assert sent.value.request.headers["authorization"] == f"Bearer {remora_stack.token}"
    expect(page.locator("#console-status")).to_contain_text("200")
    expect(page.locator("#console-timing")).to_contain_text(re.compile(r"\d+\.\d ms"))
    expect(page.locator("#console-response")).to_contain_text('"total_jobs"')
    page.locator("#console-result details summary").click()
    expect(page.locator("#console-headers")).to_contain_text("x-request-id:")
    page.check("#console-reveal")
    expect(curl).to_contain_text(f"Bearer {remora_stack.token}")
    # an operation with a body and a path parameter: the curl line carries both
    page.fill("#console-filter", "priority")
    page.locator("button.console-op[data-op=set_priority]").click()
    expect(page.locator("#console-body")).to_have_value('{\n  "priority": 1\n}')
    page.fill("#cp-path-id", "0f0f0f0f-0000-4000-8000-000000000000")
    expect(curl).to_contain_text("-X POST")
    expect(curl).to_contain_text("/api/v1/jobs/0f0f0f0f-0000-4000-8000-000000000000/priority")
    expect(curl).to_contain_text("--data-raw '{")
    page.click("#console-send")
    expect(page.locator("#console-status")).to_contain_text("404")
    shoot(page, "api_console")


def test_api_console_lets_a_viewer_send_only_what_a_viewer_may_call(page, remora_stack):
    page.goto(f"{remora_stack.url}/#token={remora_stack.viewer_token}")
    expect(page.locator("#ro-badge")).to_be_visible()
    page.evaluate("location.hash = '#/console'")
    expect(page.locator("#console-role")).to_have_text("Your role: viewer")
    doc = ok(remora_stack, "GET", "openapi.json")
    assert doc["paths"]["/api/v1/jobs"]["post"]["x-remora-role"] == "operator"
    assert doc["paths"]["/api/v1/debug"]["get"]["x-remora-role"] == "admin"
    page.locator("button.console-op[data-op=list_jobs]").click()
    expect(page.locator("#console-send")).to_be_enabled()
    page.locator("button.console-op[data-op=submit_job]").click()
    expect(page.locator("#console-send")).to_be_disabled()
    expect(page.locator("#console-send")).to_have_attribute("title", re.compile("needs operator"))
    page.locator("button.console-op[data-op=debug_report]").click()
    expect(page.locator("#console-send")).to_be_disabled()


def test_debug_panel_renders_for_admin(page, remora_stack):
    signed_in(page, remora_stack, route="jobs")
    expect(page.locator("#nav-debug")).to_be_visible()
    page.click("#nav-debug")
    expect(page.locator("#debug-version")).to_have_text(ok(remora_stack, "GET", "debug")["build"]["version"])
    expect(page.locator("#debug-db-kind")).to_have_text("sqlite")
    expect(page.locator("#debug-fsync")).to_have_text("never")
    expect(page.locator("#debug-workers-table")).to_contain_text("not reported by the worker")
    expect(page.locator("#debug-rows")).to_contain_text("job")
    expect(page.locator("#debug-requests-table")).to_contain_text("/api/v1/auth/whoami")
    config = page.locator("#debug-config-table")
    addr = config.locator("tr", has=page.locator("code", has_text=re.compile(r"^queue\.addr$")))
    expect(addr).to_contain_text(f'"{remora_stack.settings.queue.addr}"')
    expect(addr.locator("td").nth(2)).to_have_text("flag")  # where the value came from
    secret = config.locator("tr", has=page.locator("code", has_text=re.compile(r"^security\.secret_key$"))).locator("td").nth(1)
    expect(secret).to_have_text(re.compile(r'^"(\*{8})?"$'))  # masked (secrets never reach the page; unset here)
    shoot(page, "debug_panel")


def test_debug_panel_is_absent_for_a_viewer(page, remora_stack):
    debug_calls: list[str] = []
    page.on("request", lambda r: debug_calls.append(r.url) if r.url.endswith("/api/v1/debug") else None)
    page.goto(f"{remora_stack.url}/#token={remora_stack.viewer_token}")
    expect(page.locator("#ro-badge")).to_be_visible()
    expect(page.locator("#nav-debug")).to_be_hidden()
    page.evaluate("location.hash = '#/debug'")
    expect(page.locator("#debug-body")).to_contain_text("Admins only")
    assert page.locator("#debug-build, #debug-config-table").count() == 0
    assert debug_calls == []
