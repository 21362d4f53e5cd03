"""The API keeps serving when its process holds more than 1,024 open files.

`remora up` runs the API beside the worker, which holds an SSH connection per
host: on a fleet of 1,000+ hosts the API's sockets get descriptor numbers
past 1,024, the most ``select()`` can watch.
"""

from __future__ import annotations

import gc
import os
import resource

import pytest

from remora.client import Client
from tests.support.api import running_api
from tests.support.http import request

HELD = 1100  # about what a fan-out over 1,000 hosts holds: a connection per host


@pytest.fixture
def many_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < HELD + 500:
        pytest.skip(f"the open-files limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HELD + 500), hard))
    # A new descriptor takes the lowest free number: close what earlier tests left to the garbage
    # collector now, and keep it from closing more (a hole below 1024) until the test ends.
    gc.collect()
    gc.disable()
    held = [os.open(os.devnull, os.O_RDONLY)]
    while held[-1] < HELD:  # every free number up to HELD, holes included
        held.append(os.open(os.devnull, os.O_RDONLY))
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        gc.enable()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_api_serves_requests_on_descriptors_past_1024(tmp_path, many_open_files):
    with running_api(tmp_path) as api:
        probe = os.open(os.devnull, os.O_RDONLY)
        os.close(probe)
        assert probe > 1024  # the API's sockets are numbered past select()'s limit
        for _ in range(3):
            reply = request(api.host, api.port, "GET", "/health", timeout=5)
            assert reply.status == 200, reply
        client = Client(f"http://{api.host}:{api.port}", api.tokens["admin"], timeout=5)
        local = api.local_server_id()
        jobs = [client.submit({"command": "true", "server_id": local})[0]["id"]]
        kept = client._conn  # a POST checks its kept-alive connection first (a poll, at any descriptor number)
        jobs += [client.submit({"command": "true", "server_id": local})[0]["id"] for _ in range(2)]
        assert len(set(jobs)) == 3 and kept is not None and client._conn is kept  # still the first connection
        client.close()
