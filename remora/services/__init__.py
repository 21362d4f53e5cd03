"""Use-cases shared by the REST API, ``remora up`` and the CLI.

Handlers stay thin: they parse and validate, call a function here, render.
Functions that need the queue or the secret box take a ``Context``.
"""

from __future__ import annotations

from remora.services.context import Context, LazyQueue, make_queue_client
from remora.services.jobs import (
    JobSpec,
    cancel_job,
    create_jobs,
    duplicate_job,
    get_job,
    job_spec,
    may_see_script,
    put_jobs,
    rerun_job,
    set_priority,
    submit_jobs,
)
from remora.services.queries import JobFilters, job_detail, job_logs, list_jobs, parse_filters, system_info
from remora.services.render import job_dict, pem_dict, server_dict
from remora.services.servers import (
    check_status,
    create_server,
    delete_server,
    ensure_local_server,
    get_server,
    list_servers,
    resolve_servers,
    test_server,
    update_server,
)
from remora.services.tokens import create_token

__all__ = [
    "Context",
    "JobFilters",
    "JobSpec",
    "LazyQueue",
    "cancel_job",
    "check_status",
    "create_jobs",
    "create_server",
    "create_token",
    "delete_server",
    "duplicate_job",
    "ensure_local_server",
    "get_job",
    "get_server",
    "job_detail",
    "job_dict",
    "job_logs",
    "job_spec",
    "list_jobs",
    "list_servers",
    "make_queue_client",
    "may_see_script",
    "parse_filters",
    "pem_dict",
    "put_jobs",
    "rerun_job",
    "resolve_servers",
    "server_dict",
    "set_priority",
    "submit_jobs",
    "system_info",
    "test_server",
    "update_server",
]
