"""The Batches pages in headless Chromium: a 300-host batch's host matrix, its filters, a host's log, rerun failed.

The 300 servers all point at the one test sshd.  Which hosts fail is fixed by the login user: 250 log
in as the key user, 50 as the second test user (the sshd's authorized_keys file serves both), and the
command fails unless it runs as the key user, so exactly the 50 fail, with exit code 3.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.apiclient import call, key_server, ok
from tests.browser.pages import shoot, signed_in
from tests.support.http import request
from tests.support.waits import wait_for

HOSTS = 300
FAILING = 50


def finished(stack: Any, batch_id: str) -> dict:
    batch = ok(stack, "GET", f"batches/{batch_id}")
    return batch if batch["status"] != "running" else {}


def delete_servers(stack: Any, tag: str) -> None:
    for batch in ok(stack, "GET", "batches?limit=20&status=running")["batches"]:
        call(stack, "POST", f"batches/{batch['id']}/cancel")
    for server in ok(stack, "GET", f"servers?tag={tag}")["servers"]:
        wait_for(lambda s=server: call(stack, "DELETE", f"servers/{s['id']}?force=true")[0] in (200, 204, 404), 30, what="server deleted")


@pytest.fixture(scope="module")
def fleet(remora_stack, sshd) -> Iterator[dict]:
    """300 servers (50 of them fail the command) and one finished batch over all of them."""
    if not sshd.password_user:
        pytest.skip("needs a second login user on the test sshd (run as root)")
    tag = f"fleet{uuid.uuid4().hex[:6]}"
    rows = ["name,hostname,port,user,auth_type,key_file,tags"]
    keys = {}
    for i in range(HOSTS):
        name = f"{tag}-{i:03d}"
        user = sshd.password_user if i % (HOSTS // FAILING) == 0 else sshd.user
        rows.append(f"{name},{sshd.host},{sshd.port},{user},key,id_ed25519,{tag}")
        keys[name] = sshd.private_key
    started = time.monotonic()
    imported = ok(remora_stack, "POST", "servers/import", {"format": "csv", "content": "\n".join(rows) + "\n", "keys": keys})
    assert len(imported["created"]) == HOSTS, imported["skipped"][:3]
    try:
        command = f'id -un; test "$(id -un)" = {sshd.user} || exit 3'
        res = ok(remora_stack, "POST", "jobs", {"command": command, "servers": [f"tag:{tag}"], "name": tag, "timeout": 60})
        batch = wait_for(lambda: finished(remora_stack, res["batch_id"]), 120, interval=0.5, what="the 300-host batch to finish")
        assert isinstance(batch, dict)
        assert batch["counts"]["failed"] == FAILING and batch["counts"]["completed"] == HOSTS - FAILING, batch["counts"]
        print(f"300-host batch: imported and run in {time.monotonic() - started:.1f} s")
        yield {"tag": tag, "batch": batch}
    finally:
        delete_servers(remora_stack, tag)


def test_host_matrix_of_a_300_host_batch_renders_filters_and_reruns_failed(page, remora_stack, fleet):
    batch = fleet["batch"]
    signed_in(page, remora_stack, route="batches")
    # the list page links to the batch
    row = page.locator(f"#batches-table tr[data-id='{batch['id']}']")
    expect(row).to_contain_text(f"{FAILING} failed")
    row.locator("a.cmd-link").click()
    matrix = page.locator("#host-matrix")
    expect(matrix).to_have_attribute("data-count", str(HOSTS))
    expect(page.locator("#bv-status .badge")).to_have_text("failed")
    expect(page.locator("#bv-progress-text")).to_have_text(f"{HOSTS} of {HOSTS} finished")
    # virtualised: the matrix holds 300 hosts, the DOM only the rows in view
    tiles = matrix.locator(".hm-tile")
    rendered = tiles.count()
    assert 0 < rendered < HOSTS, rendered
    first_ms = float(matrix.get_attribute("data-first-render-ms") or "nan")
    expect(page.locator("#bv-filters [data-filter=all]")).to_have_attribute("data-count", str(HOSTS))
    expect(page.locator("#bv-filters [data-filter=failed]")).to_have_attribute("data-count", str(FAILING))
    expect(page.locator("#bv-filters [data-filter=completed]")).to_have_attribute("data-count", str(HOSTS - FAILING))
    shoot(page, "batch_matrix_300")

    # scrolling to the end renders the last host
    matrix.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    expect(matrix.locator(f".hm-tile[data-idx='{HOSTS - 1}']")).to_have_count(1)
    assert tiles.count() < HOSTS

    # the failed filter: exactly the failed hosts, every tile red
    page.click("#bv-filters [data-filter=failed]")
    expect(page.locator("#bv-filters [data-filter=failed]")).to_have_attribute("aria-pressed", "true")
    expect(matrix).to_have_attribute("data-count", str(FAILING))
    expect(page.locator("#bv-shown")).to_have_text(f"{FAILING} of {HOSTS} hosts shown")
    expect(tiles.first).to_be_visible()
    assert matrix.evaluate("el => el.scrollTop") == 0  # a new filter starts at the top
    statuses = set(tiles.evaluate_all("els => els.map(e => e.dataset.status)"))
    assert statuses == {"failed"}, statuses
    filter_ms = float(matrix.get_attribute("data-filter-ms") or "nan")
    print(f"300 hosts: first render {first_ms} ms, failed filter {filter_ms} ms, {rendered} tiles in the DOM")
    first_failed = tiles.first
    expect(first_failed).to_have_attribute("title", re.compile(rf"^{fleet['tag']}-000: failed · exit 3 · "))  # hosts sorted by name

    # a tile opens that host's live log
    first_failed.click()
    expect(page.locator("#job-view")).to_be_visible()
    expect(page.locator("#jv-exit")).to_have_text("3")
    expect(page.locator("#log-box pre[data-stream=combined]")).to_contain_text("remora-pw", timeout=10_000)
    page.keyboard.press("Escape")
    expect(page.locator("#job-view")).to_have_count(0)

    # rerun failed: a new batch on exactly the failed hosts, opened at once
    page.click("#bv-rerun-failed")
    expect(page).not_to_have_url(f"{remora_stack.url}/#/batches?id={batch['id']}")
    expect(page.locator("#bv-parent")).to_have_text(batch["id"][:8])
    expect(page.locator("#host-matrix")).to_have_attribute("data-count", str(FAILING))
    new_id = page.url.split("id=")[1]
    rerun = wait_for(lambda: finished(remora_stack, new_id), 60, interval=0.5, what="the rerun to finish")
    assert isinstance(rerun, dict)
    assert rerun["parent_id"] == batch["id"] and rerun["total"] == FAILING
    assert {h["server_name"] for h in rerun["hosts"]} == {h["server_name"] for h in batch["hosts"] if h["status"] == "failed"}
    # the open view refreshes by itself until the rerun is over
    expect(page.locator("#bv-status .badge")).to_have_text("failed", timeout=10_000)
    expect(page.locator("#bv-rerun-all")).to_be_visible()


def test_host_matrix_stays_small_and_fast_at_1000_hosts(page, remora_stack):
    """The matrix component with 1,000 hosts: only the rows in view are in the DOM; render and filter are quick."""
    signed_in(page, remora_stack, route="batches")
    page.wait_for_selector("#batches-table, .empty")
    timings = page.evaluate(
        """async () => {
        const { HostMatrix } = await import(new URL('batches.js', document.baseURI).href);
        const states = ['completed', 'completed', 'completed', 'failed', 'running', 'queued', 'canceled'];
        const hosts = Array.from({ length: 1000 }, (_, i) => ({ server_name: `web-${String(i).padStart(4, '0')}`,
          job_id: `job-${i}`, status: states[i % states.length], exit_code: null, duration: null, error: '' }));
        const m = new HostMatrix({ label: 'test' });
        m.el.id = 'matrix-1000';
        document.querySelector('#main').append(m.el);
        let t = performance.now();
        m.setHosts(hosts);
        const first = performance.now() - t;
        const domFirst = m.el.querySelectorAll('.hm-tile').length;
        t = performance.now();
        m.setHosts(hosts.filter((x) => x.status === 'failed'));
        const filter = performance.now() - t;
        const failed = Number(m.el.dataset.count);
        m.setHosts(hosts);
        m.el.scrollTop = m.el.scrollHeight;
        m.render();
        const last = !!m.el.querySelector('[data-idx="999"]');
        return { first, filter, domFirst, failed, last, domEnd: m.el.querySelectorAll('.hm-tile').length };
    }"""
    )
    print(f"1,000 hosts: first render {timings['first']:.1f} ms, filter {timings['filter']:.1f} ms, {timings['domFirst']} tiles in the DOM")
    assert timings["failed"] == 1000 // 7 + (1 if 1000 % 7 > 3 else 0)
    assert 0 < timings["domFirst"] < 300 and 0 < timings["domEnd"] < 300
    assert timings["last"]
    assert timings["first"] < 500 and timings["filter"] < 500, timings  # measured: a few ms


def test_execute_form_rollout_fields(page, remora_stack, sshd):
    tag = f"roll{uuid.uuid4().hex[:6]}"
    for suffix in ("a", "b", "c"):
        key_server(remora_stack, sshd, f"{tag}-{suffix}", [tag])
    signed_in(page, remora_stack, route="jobs")
    page.click("#new-job-btn")
    page.fill("#f-command", "echo rolled-out")
    expect(page.locator("#f-rollout")).to_be_hidden()  # one server or none: no rollout
    page.click(f"button.chip:has-text('#{tag}')")
    expect(page.locator("#f-rollout")).to_be_visible()
    # the client checks what the API checks
    for concurrency, max_failures, field, message in (
        ("0", "", "#f-concurrency-error", "at least 1"),
        ("0%", "", "#f-concurrency-error", "between 1% and 100%"),
        ("2", "101%", "#f-max-failures-error", "between 0% and 100%"),
        ("two", "", "#f-concurrency-error", "a number or a percentage"),
    ):
        page.fill("#f-concurrency", concurrency)
        page.fill("#f-max-failures", max_failures)
        page.click("#execute-submit")
        expect(page.locator(field)).to_contain_text(message)
        expect(page.locator("#execute-dialog")).to_be_visible()
    page.fill("#f-concurrency", "50%")
    page.fill("#f-max-failures", "1")
    shoot(page, "execute_rollout")
    page.click("#execute-submit")
    # the new batch's page, with its rollout
    expect(page.locator("#bv-rollout")).to_have_text("concurrency 50% (2 hosts), max failures 1")
    expect(page.locator("#host-matrix")).to_have_attribute("data-count", "3")
    expect(page.locator("#host-matrix .hm-tile[data-status=completed]")).to_have_count(3, timeout=20_000)
    batch_id = page.url.split("id=")[1]
    batch = ok(remora_stack, "GET", f"batches/{batch_id}")
    assert batch["rollout"] == {"concurrency": "50%", "max_failures": 1}
    assert batch["concurrency"] == 2


def test_execute_form_shows_the_apis_rollout_error(page, remora_stack, sshd):
    """A rollout the API refuses (sent past the client's checks) is shown at the fields, the dialog stays open."""
    tag = f"rollerr{uuid.uuid4().hex[:6]}"
    for suffix in ("a", "b"):
        key_server(remora_stack, sshd, f"{tag}-{suffix}", [tag])
    signed_in(page, remora_stack, route="jobs")
    page.click("#new-job-btn")
    page.fill("#f-command", "true")
    page.click(f"button.chip:has-text('#{tag}')")
    # Make the request carry an invalid rollout, as an older or different client would.
    page.route(
        "**/api/v1/jobs",
        lambda route: route.continue_(post_data=route.request.post_data.replace('"concurrency":2', '"concurrency":0')),
    )
    page.fill("#f-concurrency", "2")
    page.click("#execute-submit")
    expect(page.locator("#f-rollout-error")).to_contain_text("concurrency must be at least 1")
    expect(page.locator("#execute-dialog")).to_be_visible()


def test_cancel_a_running_batch_then_rerun_all(page, remora_stack, sshd):
    tag = f"cancel{uuid.uuid4().hex[:6]}"
    servers = [key_server(remora_stack, sshd, f"{tag}-{suffix}", [tag]) for suffix in ("a", "b", "c")]
    res = ok(remora_stack, "POST", "jobs", {"command": "sleep 30", "server_ids": [s["id"] for s in servers], "rollout": {"concurrency": 1}})
    batch_id = res["batch_id"]
    # an older link to the batch (the jobs page's batch panel) opens the batch page
    signed_in(page, remora_stack, route=f"jobs?batch={batch_id}")
    expect(page.locator("#host-matrix")).to_have_attribute("data-count", "3")
    expect(page.locator("#bv-rollout")).to_have_text("concurrency 1")
    # one host runs at a time: the view follows it live
    expect(page.locator("#host-matrix .hm-tile[data-status=running]")).to_have_count(1, timeout=15_000)
    expect(page.locator("#bv-filters [data-filter=queued]")).to_have_attribute("data-count", "2")
    expect(page.locator("#bv-rerun-failed")).to_have_count(0)  # only finished batches rerun
    page.click("#bv-cancel")
    page.click("#confirm-dialog .btn.danger")
    expect(page.locator("#bv-status .badge")).to_have_text("canceled", timeout=15_000)
    expect(page.locator("#bv-filters [data-filter=canceled]")).to_have_attribute("data-count", "3")
    expect(page.locator("#bv-cancel")).to_have_count(0)
    page.click("#bv-rerun-all")
    expect(page.locator("#bv-parent")).to_have_text(batch_id[:8])
    expect(page.locator("#host-matrix")).to_have_attribute("data-count", "3")
    new_id = page.url.split("id=")[1]
    assert ok(remora_stack, "GET", f"batches/{new_id}")["parent_id"] == batch_id
    ok(remora_stack, "POST", f"batches/{new_id}/cancel")


def test_batch_detail_answers_304_until_a_job_changes(remora_stack, sshd):
    """What the batch page polls: GET /batches/:id with If-None-Match costs a 304 while nothing changed."""
    tag = f"etag{uuid.uuid4().hex[:6]}"
    servers = [key_server(remora_stack, sshd, f"{tag}-{suffix}", [tag]) for suffix in ("a", "b")]
    batch_id = ok(remora_stack, "POST", "jobs", {"command": "true", "server_ids": [s["id"] for s in servers]})["batch_id"]
    wait_for(lambda: finished(remora_stack, batch_id), 30, interval=0.2, what="batch finished")
    url = urlsplit(remora_stack.url)

    def get(etag: str | None = None) -> Any:
        headers = {"If-None-Match": etag} if etag else {}
        return request(url.hostname or "", url.port or 80, "GET", f"/api/v1/batches/{batch_id}", token=remora_stack.token, headers=headers)

    def unchanged() -> str:
        etag = get().headers["etag"]
        return etag if get(etag).status == 304 else ""

    etag = str(wait_for(unchanged, 10, interval=0.1, what="a 304 for an unchanged batch"))
    assert get(etag).body == b""
    ok(remora_stack, "POST", f"batches/{batch_id}/rerun", {"only": "all"})  # new jobs: the marker moves
    fresh = get(etag)
    assert fresh.status == 200 and fresh.headers["etag"] != etag
    assert fresh.json()["id"] == batch_id and len(fresh.json()["hosts"]) == 2
    # with each host's output the answer is built every time (output grows without a job write)
    outputs = request(url.hostname or "", url.port or 80, "GET", f"/api/v1/batches/{batch_id}?output=true", token=remora_stack.token)
    assert outputs.status == 200 and "etag" not in outputs.headers and "stdout" in outputs.json()["hosts"][0]
