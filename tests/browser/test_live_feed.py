"""The dashboard follows the change feed: a batch's view and the job list update without a reload or a timed poll.

While the feed's stream is up (``data-live="true"``) the views' timed polls load nothing (only a
30 s safety refresh), so a change shown within seconds came through the feed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.apiclient import ok, submit
from tests.browser.pages import signed_in


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file the test creates to let the jobs finish (in a directory the jobs' account can look into)."""
    where = Path(tempfile.mkdtemp(prefix="remora-gate-"))
    os.chmod(where, 0o755)
    yield where / "go"
    shutil.rmtree(where)


def test_a_running_batch_and_the_job_list_update_from_the_feed(page, remora_stack, gate):
    tag = "live" + uuid.uuid4().hex[:6]
    for n in range(3):
        ok(
            remora_stack,
            "POST",
            "servers",
            {"name": f"{tag}-{n}", "hostname": "localhost", "user": "remora", "auth_type": "local", "tags": [tag]},
        )
    command = f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done"
    batch_id = ok(remora_stack, "POST", "jobs", {"command": command, "servers": [f"tag:{tag}"], "timeout": 60})["batch_id"]
    signed_in(page, remora_stack, route=f"batches?id={batch_id}")
    view = page.locator("#batch-view")
    expect(view).to_have_attribute("data-live", "true")
    expect(page.locator("#host-matrix .hm-tile[data-status=running]")).to_have_count(3, timeout=20_000)
    expect(page.locator("#bv-status .badge")).to_have_text("running")
    loads = int(view.get_attribute("data-loads") or "0")
    gate.write_text("")
    expect(page.locator("#bv-status .badge")).to_have_text("completed", timeout=10_000)
    expect(page.locator("#bv-progress-text")).to_have_text("3 of 3 finished")
    expect(view).to_have_attribute("data-live", "false")  # a finished batch stops following
    assert int(view.get_attribute("data-loads") or "0") - loads <= 4  # one load per coalesced burst of changes

    # the job list: a new job shows up, and then its end, without a reload
    page.evaluate("location.hash = '#/jobs'")
    expect(page.locator("#main")).to_have_attribute("data-live", "true")
    job = ok(
        remora_stack,
        "POST",
        "jobs",
        {
            "command": "echo listed",
            "server_id": next(s["id"] for s in ok(remora_stack, "GET", "servers")["servers"] if s["name"] == f"{tag}-0"),
        },
    )
    row = page.locator(f"tr[data-id='{job['id']}']")
    expect(row).to_be_visible(timeout=10_000)
    expect(row).to_contain_text("completed", timeout=10_000)


def test_the_job_view_shows_a_running_jobs_output_from_the_feed_without_polling_its_log(page, remora_stack, gate):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/" in r.url else None)
    command = f"echo first; echo warn >&2; while [ ! -e {gate} ]; do sleep 0.05; done; echo second"
    job = submit(remora_stack, command)
    signed_in(page, remora_stack, route=f"jobs?job={job['id']}")
    log = page.locator("#log-box pre[data-stream=combined]")
    expect(log).to_contain_text("first", timeout=15_000)
    expect(page.locator("#jv-status")).to_contain_text("running")
    gate.write_text("")
    expect(log).to_contain_text("second", timeout=15_000)
    expect(page.locator("#jv-status")).to_contain_text("completed", timeout=10_000)
    assert sorted(log.inner_text().splitlines()) == ["first", "second", "warn"], log.inner_text()
    page.click("#tab-stdout")
    expect(page.locator("#log-box pre[data-stream=stdout]")).to_have_text("first\nsecond\n")
    page.click("#tab-stderr")
    expect(page.locator("#log-box pre[data-stream=stderr]")).to_have_text("warn\n")
    assert any("/events?" in url and "output=true" in url for url in requests), requests
    assert not [url for url in requests if "/logs" in url], requests
