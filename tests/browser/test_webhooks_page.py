"""The dashboard's Webhooks page in headless Chromium: add a webhook pointing at a local receiver, send a test, see it delivered."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.pages import shoot, signed_in
from tests.support.receiver import Receiver

pytestmark = pytest.mark.browser


def test_add_a_webhook_send_a_test_and_see_the_delivery(page, remora_stack):
    with Receiver() as receiver:
        signed_in(page, remora_stack, route="")
        expect(page.locator("#nav-webhooks")).to_be_visible()  # an admin token
        page.click("#nav-webhooks")
        expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
        page.fill("#wh-name", "browser-hook")
        page.fill("#wh-url", receiver.url)
        page.fill("#wh-secret", "browser-secret")
        page.check("#wh-ev-job-completed")
        page.click("#webhook-add")
        row = page.locator("#webhooks-table tr[data-webhook='browser-hook']")
        expect(row).to_contain_text("job.completed, job.failed")
        expect(row).to_contain_text("yes")  # signed
        assert "browser-secret" not in page.content()
        row.get_by_role("button", name="Send a test to browser-hook").click()
        delivery = page.locator("#deliveries-table tbody tr").first
        expect(delivery).to_contain_text("ping")
        expect(delivery).to_contain_text("delivered")
        expect(delivery.locator("td[data-col=status_code]")).to_have_text("200")
        [got] = receiver.requests
        assert got.headers["x-remora-event"] == "ping" and got.headers["x-remora-delivery"] == delivery.get_attribute("data-delivery")
        shoot(page, "webhooks-page")
        page.fill("#wh-name", "bad-url")
        page.fill("#wh-url", "ftp://example.com/x")
        page.click("#webhook-add")
        expect(page.locator("#wh-form-error")).to_contain_text("http")
        row.get_by_role("button", name="Delete browser-hook").click()
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.locator("#webhooks-table tr[data-webhook='browser-hook']")).to_have_count(0)


def test_the_webhooks_page_is_for_admins(page, remora_stack):
    page.goto(f"{remora_stack.url}/#token={remora_stack.viewer_token}")
    page.wait_for_selector("#topbar:not([hidden])")
    expect(page.locator("#ro-badge")).to_be_visible()
    expect(page.locator("#nav-webhooks")).to_be_hidden()
    page.evaluate("location.hash = '#/webhooks'")
    expect(page.get_by_text("Admins only")).to_be_visible()
