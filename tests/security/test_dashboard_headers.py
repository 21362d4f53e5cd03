"""The dashboard's security headers, and what they do in a real (headless Chromium) browser.

Every response -- HTML, JavaScript, CSS, JSON, errors, a static 404, HEAD,
304, preflight -- carries a strict Content-Security-Policy (no inline
script or style, ``frame-ancestors 'none'``), ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and ``X-Content-Type-Options: nosniff``.
In Chromium a page from another origin cannot frame the dashboard, the
dashboard runs without a single CSP violation, and a ``#token=`` link that
would replace a different stored token asks first.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import waits as fx
from tests.support.api import Api, running_api

EXPECTED = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def _check(reply: Any, what: str) -> None:
    csp = reply.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == "default-src 'self'", (what, csp)
    assert directives.get("script-src") == "script-src 'self'", (what, csp)
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", (what, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (what, csp)
    for name, value in EXPECTED.items():
        assert reply.headers.get(name) == value, (what, name, reply.headers)
    assert "\n" not in csp


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("headers")) as api:
        yield api


def test_every_response_type_carries_the_headers(api):
    cases = {
        "html": api.get("/", token=None),
        "index": api.get("/index.html", token=None),
        "js": api.get("/app.js", token=None),
        "css": api.get("/app.css", token=None),
        "json": api.get("/api/v1/jobs", token="viewer"),
        "health": api.get("/health", token=None),
        "unauthorized": api.get("/api/v1/jobs", token=None),
        "forbidden": api.request("POST", "/api/v1/servers", {"name": "x"}, token="viewer"),
        "api 404": api.get("/api/v1/nope", token="viewer"),
        "static 404": api.get("/nope.js", token=None),
        "405": api.request("PUT", "/health", token=None),
        "400": api.request("POST", "/api/v1/jobs", raw=b"{", token="operator"),
        "head": api.request("HEAD", "/", token=None),
        "preflight": api.request("OPTIONS", "/api/v1/jobs", token=None),
        "metrics": api.get("/metrics", token="admin"),
    }
    etag = cases["json"].headers["etag"]
    cases["304"] = api.get("/api/v1/jobs", token="viewer", headers={"If-None-Match": etag})
    assert cases["304"].status == 304
    assert cases["static 404"].status == 404 and cases["unauthorized"].status == 401
    for what, reply in cases.items():
        _check(reply, what)


def test_dashboard_html_has_no_inline_script_or_style(api):
    html = api.get("/", token=None).body.decode()
    import re

    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert " style=" not in html and "javascript:" not in html


# -- in Chromium -------------------------------------------------------------------------------


@pytest.fixture
def context(browser) -> Iterator[Any]:
    ctx = browser.new_context()
    yield ctx
    ctx.close()


class _FramingPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = f'<!doctype html><title>evil</title><iframe id="f" src="{self.target}/" width="800" height="600"></iframe>'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_another_origin_cannot_frame_the_dashboard(api, context):
    handler = type("Handler", (_FramingPage,), {"target": f"http://{api.host}:{api.port}"})
    other = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        page = context.new_page()
        seen: list[str] = []
        page.on("console", lambda msg: seen.append(msg.text))
        served: list[int] = []
        page.on("response", lambda r: served.append(r.status) if r.url.startswith(handler.target) else None)
        page.goto(f"http://127.0.0.2:{other.server_address[1]}/")
        page.wait_for_selector("#f")
        # The dashboard's own page was fetched (the server answered) but the browser refused to show it.
        frame = next((f for f in page.frames if f != page.main_frame), None)

        def dashboard_in_frame() -> bool:
            if frame is None:
                return False
            try:
                return bool(frame.evaluate("() => !!document.querySelector('#topbar')"))
            except Exception:
                return False

        fx.wait_for(lambda: served or seen, 10, interval=0.05, what="the framed request")
        page.wait_for_timeout(500)  # give a wrongly allowed frame time to load its document
        assert not dashboard_in_frame(), "the dashboard loaded inside another origin's frame"
        assert frame is None or "Remora" not in (frame.title() if not frame.is_detached() else ""), "dashboard title in frame"
        # The dashboard itself (top level) still loads.
        page.goto(f"{handler.target}/")
        page.wait_for_selector("#token-input")
    finally:
        other.shutdown()
        other.server_close()


def test_dashboard_runs_without_csp_violations(api, context):
    page = context.new_page()
    violations: list[str] = []
    errors: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )
    page.goto(f"http://{api.host}:{api.port}/#token={api.tokens['admin']}")
    page.wait_for_selector("#topbar:not([hidden])")
    for route in ("overview", "jobs", "servers", "queue", "templates"):
        page.evaluate(f"location.hash = '#/{route}'")
        page.wait_for_selector(f".nav a[data-route={route}][aria-current]", timeout=10_000)
    page.click("#theme-btn")
    page.wait_for_timeout(300)
    assert not violations, violations
    assert not errors, errors


def _stored_token(page: Any) -> str:
    return str(page.evaluate("() => localStorage.getItem('remora.token')"))


def test_a_token_link_asks_before_replacing_a_different_stored_token(api, context):
    base = f"http://{api.host}:{api.port}/"
    page = context.new_page()
    dialogs: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        if answer["accept"]:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    admin, viewer = api.tokens["admin"], api.tokens["viewer"]
    page.goto(f"{base}#token={admin}")
    page.wait_for_selector("#topbar:not([hidden])")
    assert _stored_token(page) == admin and dialogs == []  # nothing stored before: no question

    page.goto(f"{base}#token={admin}")  # the same token: no question
    page.reload()
    page.wait_for_selector("#topbar:not([hidden])")
    assert dialogs == []

    page.goto("about:blank")
    page.goto(f"{base}#token={viewer}")  # a different token: asked, and "no" keeps the stored one
    page.wait_for_selector("#topbar:not([hidden])")
    fx.wait_for(lambda: dialogs, 10, interval=0.05, what="the replace question")
    assert "different API token" in dialogs[0]
    assert _stored_token(page) == admin
    assert "token=" not in page.url  # the token left the address bar either way

    answer["accept"] = True
    page.goto("about:blank")
    page.goto(f"{base}#token={viewer}")
    page.wait_for_selector("#topbar:not([hidden])")
    fx.wait_for(lambda: len(dialogs) == 2, 10, interval=0.05, what="the second replace question")
    fx.wait_for(lambda: _stored_token(page) == viewer, 10, interval=0.05, what="the link's token to be stored")
