"""The Schedules page in headless Chromium: pause and resume a schedule from the page, run one now and land on its job."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from tests.browser.apiclient import ok
from tests.browser.pages import shoot, signed_in


def test_pause_resume_and_run_now_from_the_schedules_page(page, remora_stack):
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    template = f"tpl-{name}"
    ok(
        remora_stack,
        "POST",
        "templates",
        {
            "name": template,
            "command": "echo",
            "args": "{{ what }}",
            "servers": ["local"],
            "parameters": [{"name": "what", "default": "hello"}],
        },
    )
    ok(remora_stack, "POST", "schedules", {"name": name, "template": template, "cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    signed_in(page, remora_stack, route="schedules")
    row = page.locator(f"#schedules-table tr[data-name='{name}']")
    expect(row.locator(".sched-state")).to_have_text("enabled")
    expect(row.locator(".sched-next time")).to_have_count(1)
    expect(row.locator(".sched-last")).to_contain_text("never run")

    row.locator("button.sched-toggle").click()
    expect(row.locator(".sched-state")).to_have_text("paused")
    expect(row).to_have_attribute("data-enabled", "false")
    expect(row.locator(".sched-next")).to_have_text("—")
    assert ok(remora_stack, "GET", f"schedules/{name}")["enabled"] is False
    shoot(page, "schedules-paused")

    row.locator("button.sched-toggle").click()
    expect(row.locator(".sched-state")).to_have_text("enabled")
    expect(row.locator(".sched-next time")).to_have_count(1)
    assert ok(remora_stack, "GET", f"schedules/{name}")["enabled"] is True

    row.locator("button.sched-run-now").click()
    expect(page).to_have_url(re.compile(r"#/jobs\?job="))
    job_id = page.url.split("job=")[1].split("&")[0]
    job = ok(remora_stack, "GET", f"jobs/{job_id}")
    assert job["template"] == template
    expect(page.get_by_text(job_id).first).to_be_visible()

    page.evaluate("location.hash = '#/schedules'")
    row = page.locator(f"#schedules-table tr[data-name='{name}']")
    expect(row.locator(".sched-last a.run-link")).to_have_text(f"job {job_id[:8]}")
    expect(row.locator(".sched-runs li").first).to_contain_text("run now")
