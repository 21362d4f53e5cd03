"""One ``JobSpec``: a job file's job and an API body become the same spec with the same defaults."""

from __future__ import annotations

import dataclasses

import pytest

from remora import jobfile
from remora.config import Settings
from remora.errors import ValidationError
from remora.services import jobs as job_service
from remora.services.context import Context


def test_there_is_one_jobspec() -> None:
    assert job_service.JobSpec is jobfile.JobSpec


def test_a_job_file_and_an_api_body_get_the_same_defaults() -> None:
    ctx = Context(Settings())
    [from_file] = jobfile.load_text("command: uptime\n")
    assert from_file.servers == ["local"] and from_file.priority is None and from_file.timeout is None
    via_api = job_service.job_spec(from_file.payload(), ctx)
    direct = job_service.job_spec({"command": "uptime", "servers": ["local"]}, ctx)
    assert via_api == direct
    assert (direct.priority, direct.timeout, direct.retries, direct.pty) == (5, job_service.default_timeout(ctx.settings), 0, False)
    assert dataclasses.replace(direct, priority=None) != direct


def test_the_api_rejects_what_a_job_file_would_not_set() -> None:
    ctx = Context(Settings())
    with pytest.raises(ValidationError) as info:
        job_service.job_spec({"command": "uptime", "servers": ["local"], "priority": 11}, ctx)
    assert info.value.details == {"priority": "must be between 1 and 10"}
    # a job file's position is not an API field
    assert job_service.job_spec({"command": "x", "servers": ["a"], "source": "f.yml:1:1"}, ctx).source == ""
