"""Property-based fuzzing from the API's own OpenAPI document: no 5xx, every error in the envelope."""

from __future__ import annotations

import json

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given

from tests.support.api import running_api

pytestmark = pytest.mark.slow
EXAMPLES = 12


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_api(tmp_path_factory.mktemp("fuzz"), **{"api.max_body_size": 65536}) as api:
        api.local_server_id()
        yield api


def check_reply(case, response) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500 or response.status_code == 503, where
    if response.status_code >= 400:
        data = json.loads(response.content)
        assert isinstance(data.get("error"), str) and data["error"], where
        assert isinstance(data.get("code"), str) and data["code"].isupper(), where
        assert isinstance(data.get("details", {}), dict), where


def test_fuzz_every_operation(api):
    doc = api.get("/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    base = f"http://{api.host}:{api.port}"
    headers = {"Authorization": "Bearer " + api.tokens["admin"]}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 35
    calls = []
    for operation, mode in [(op, mode) for op in operations for mode in schemathesis.GenerationMode]:
        if operation.path in ("/api/v1/servers/{id}/test",):
            continue  # real SSH logins: covered by test_api_servers
        if operation.path == "/api/v1/events":
            continue  # a long-poll waits up to its timeout for a change: its inputs are covered by test_events

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case) -> None:
            response = case.call(base_url=base, headers=headers, timeout=10)
            calls.append(response.status_code)
            check_reply(case, response)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to make invalid in this operation
    assert len(calls) > 300 and any(c >= 400 for c in calls) and any(c < 300 for c in calls)
