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
