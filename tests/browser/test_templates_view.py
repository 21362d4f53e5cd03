"""The Templates page in headless Chromium, against a real Remora (queue, worker, API) and a real sshd.

A runner opens a template, picks a non-default choice, flips a bool switch, types a hostile value and
runs it: the live job view shows the chosen values, the hostile one echoed literally (the API quotes
it); servers given in the form (a tag) open the batch view instead. A parameter the server finds
missing gets the server's message next to its field. An operator creates a template through the form
(a server-side error lands next to its field first) and finds it in the list; editing keeps the
write-only secret variables. Viewers and runners get no editor.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.apiclient import call, key_server, ok
from tests.browser.pages import shoot

HOSTILE = "x\"; echo pwned $(echo sub) `echo tick` ' && exit 7"


def token(stack: Any, role: str) -> str:
    return str(ok(stack, "POST", "tokens", {"name": f"tpl-{role}-{uuid.uuid4().hex[:6]}", "role": role})["token"])


def open_as(pg: Any, stack: Any, tok: str, route: str) -> None:
    pg.goto(f"{stack.url}/#token={tok}")
    pg.wait_for_selector("#topbar:not([hidden])")
    pg.evaluate(f"location.hash = '#/{route}'")


@pytest.fixture(scope="module")
def ssh_server(remora_stack, sshd) -> str:
    name = f"tpl-ssh-{uuid.uuid4().hex[:6]}"
    key_server(remora_stack, sshd, name)
    return name


def make_template(stack: Any, server: str, **extra: Any) -> str:
    name = f"tpl-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "description": "say where and how",
        "command": "echo region={{ region }} dry=$REMORA_PARAM_DRY_RUN note={{ note }}",
        "servers": [server],
        "parameters": [
            {"name": "region", "type": "choice", "choices": ["eu", "us", "ap"], "default": "eu", "required": True},
            {"name": "dry_run", "type": "bool", "default": False, "description": "only say what would change"},
            {"name": "note", "type": "string"},
        ],
        **extra,
    }
    ok(stack, "POST", "templates", body)
    return name


def test_a_runner_runs_a_template_with_a_choice_and_a_switch_and_sees_the_output(page, remora_stack, ssh_server):
    name = make_template(remora_stack, ssh_server)
    open_as(page, remora_stack, token(remora_stack, "runner"), "templates")
    page.fill("#tpl-filter", name)
    expect(page.locator("#templates-table tbody tr")).to_have_count(1)
    row = page.locator(f"#templates-table tr[data-name='{name}']")
    expect(row).to_contain_text(ssh_server)
    expect(row.locator("td.num")).to_have_text("3")
    row.locator("a.tpl-link").click()
    expect(page.locator("#tpl-title")).to_have_text(name)
    # a runner runs but does not edit
    expect(page.locator("#tpl-edit")).to_have_count(0)
    expect(page.locator("#tpl-delete")).to_have_count(0)
    # the form follows the parameters: a select with the choices (default picked), a switch, a text field
    expect(page.locator("#tp-region option")).to_have_text(["eu", "us", "ap"])
    expect(page.locator("#tp-region")).to_have_value("eu")
    expect(page.locator("#tp-region")).to_have_attribute("aria-required", "true")
    expect(page.locator("#tp-dry_run")).to_have_attribute("role", "switch")
    expect(page.locator("#tp-dry_run")).not_to_be_checked()
    page.select_option("#tp-region", "ap")
    page.check("#tp-dry_run")
    page.fill("#tp-note", HOSTILE)
    shoot(page, "template_run_form")
    page.click("#tpl-run-submit")
    expect(page).to_have_url(re.compile(r"#/jobs\?job=[0-9a-f-]{36}$"))
    log = page.locator("#log-box pre[data-stream=combined]")
    expect(log).to_contain_text(f"region=ap dry=true note={HOSTILE}", timeout=20_000)
    expect(page.locator("#jv-status")).to_contain_text("completed", timeout=20_000)
    shoot(page, "template_run_output")


def test_a_parameter_the_server_finds_missing_gets_its_message_next_to_the_field(page, remora_stack, ssh_server):
    name = make_template(remora_stack, ssh_server)
    open_as(page, remora_stack, token(remora_stack, "runner"), f"templates?name={name}")
    expect(page.locator("#tp-note")).to_be_visible()
    # the form says what it knows: note is optional here...
    expect(page.locator("#tp-note")).not_to_have_attribute("aria-required", "true")
    # ...but an operator has made it required meanwhile: the server's 400 names it, shown at the field
    template = ok(remora_stack, "GET", f"templates/{name}")
    params = [{**p, "required": True} if p["name"] == "note" else p for p in template["parameters"]]
    body = {k: template[k] for k in ("command", "servers", "description")}
    ok(remora_stack, "PUT", f"templates/{name}", {**body, "parameters": params})
    page.click("#tpl-run-submit")
    expect(page.locator("#tp-note-error")).to_have_text("parameter 'note' is required")
    expect(page.locator("#tp-note")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#tpl-run-error")).to_be_hidden()
    # and once the page knows, it checks before asking
    page.reload()
    expect(page.locator("#tp-note")).to_have_attribute("aria-required", "true")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    page.click("#tpl-run-submit")
    expect(page.locator("#tp-note-error")).to_have_text("Required.")
    assert requests == [], requests


def test_a_run_on_servers_given_in_the_form_opens_the_batch_view(page, remora_stack, sshd, ssh_server):
    tag = f"tplfan{uuid.uuid4().hex[:6]}"
    for suffix in ("a", "b"):
        key_server(remora_stack, sshd, f"{tag}-{suffix}", [tag])
    name = make_template(remora_stack, ssh_server)
    open_as(page, remora_stack, token(remora_stack, "runner"), f"templates?name={name}")
    page.select_option("#tp-region", "us")
    page.fill("#tp-servers", f"tag:{tag}")
    page.click("#tpl-run-submit")
    expect(page).to_have_url(re.compile(r"#/batches\?id=[0-9a-f-]{36}$"))
    expect(page.locator("#host-matrix .hm-tile[data-status=completed]")).to_have_count(2, timeout=20_000)
    page.locator("#host-matrix .hm-tile").first.click()
    expect(page.locator("#log-box pre[data-stream=combined]")).to_contain_text("region=us dry=false note=", timeout=10_000)


def stored_secrets(stack: Any, name: str) -> dict:
    from remora import models
    from remora.crypto import SecretBox

    row = models.Template.get(models.Template.name == name)
    return json.loads(SecretBox.from_settings(stack.settings).decrypt_str(row.secret_env)) if row.secret_env else {}


def test_an_operator_creates_a_template_in_the_form_and_finds_it_in_the_list(page, remora_stack, ssh_server):
    name = f"made-{uuid.uuid4().hex[:8]}"
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )
    open_as(page, remora_stack, token(remora_stack, "operator"), "templates")
    page.click("#tpl-new")
    page.fill("#tf-name", name)
    page.fill("#tf-description", "greets")
    page.fill("#tf-servers", ssh_server)
    page.fill("#tf-command", "echo {{ greeting }}")
    page.fill("#tf-secret-env", "API_TOKEN=tok-1234-secret")
    page.click("#tf-save")
    # the server's check, next to the field it names: the placeholder has no parameter yet
    expect(page.locator("#tf-command-error")).to_contain_text("{{ greeting }}")
    page.click("#tf-add-param")
    row = page.locator("#tf-param-rows tr").last
    row.locator(".pf-name").fill("greeting")
    row.locator(".pf-type").select_option("choice")
    row.locator(".pf-choices").fill("hello, hi")
    row.locator(".pf-default").fill("hi")
    row.locator(".pf-required").check()
    shoot(page, "template_form")
    page.click("#tf-save")
    expect(page.locator("#tpl-title")).to_have_text(name)
    expect(page.locator("#tpl-params tr[data-name=greeting]")).to_contain_text("choice")
    expect(page.locator("#tpl-secret-env")).to_have_text("API_TOKEN=***")
    page.click("#tpl-back")
    page.fill("#tpl-filter", name)
    listed = page.locator(f"#templates-table tr[data-name='{name}']")
    expect(listed).to_contain_text("greets")
    expect(listed.locator("td.num")).to_have_text("1")
    saved = ok(remora_stack, "GET", f"templates/{name}")
    assert saved["parameters"][0] | {"description": ""} == {
        "name": "greeting", "type": "choice", "choices": ["hello", "hi"], "default": "hi", "required": True, "secret": False, "description": ""
    }, saved  # fmt: skip

    # editing leaves the secret variable as it is when its line reads ***
    listed.locator("a.tpl-link").click()
    page.click("#tpl-edit")
    expect(page.locator("#tf-secret-env")).to_have_value("API_TOKEN=***")
    page.fill("#tf-description", "greets politely")
    page.click("#tf-save")
    expect(page.locator("#tpl-definition")).to_contain_text("greets politely")
    assert stored_secrets(remora_stack, name) == {"API_TOKEN": "tok-1234-secret"}

    # delete, after a confirmation
    page.click("#tpl-delete")
    page.click("#confirm-dialog .btn.danger")
    expect(page.locator("#templates-table, .empty")).not_to_have_count(0)
    assert call(remora_stack, "GET", f"templates/{name}")[0] == 404
    assert not violations, violations  # the list, the form and the page of one template keep to the CSP


def test_a_viewer_reads_templates_without_run_or_edit_and_no_script_body(page, remora_stack, ssh_server):
    name = make_template(remora_stack, ssh_server)
    scripted = f"tpl-script-{uuid.uuid4().hex[:6]}"
    ok(
        remora_stack,
        "POST",
        "templates",
        {"name": scripted, "script": "echo body-of-the-script\n", "shell": "/bin/sh", "servers": [ssh_server]},
    )
    open_as(page, remora_stack, remora_stack.viewer_token, "templates")
    expect(page.locator(f"#templates-table tr[data-name='{name}']")).to_be_visible()
    expect(page.locator("#tpl-new")).to_have_count(0)
    page.evaluate(f"location.hash = '#/templates?name={scripted}'")
    expect(page.locator("#tpl-script")).to_contain_text("hidden")
    expect(page.locator("#tpl-run")).to_have_count(0)
    expect(page.locator("#tpl-edit")).to_have_count(0)
    assert "body-of-the-script" not in page.content()
