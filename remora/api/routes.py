"""Every route of the API, in one table (routing, auth, OpenAPI and the role-matrix test use it)."""

from __future__ import annotations

from remora.api import (
    routes_admin,
    routes_batches,
    routes_events,
    routes_files,
    routes_jobs,
    routes_schedules,
    routes_servers,
    routes_system,
    routes_templates,
    routes_tokens,
    routes_webhooks,
)
from remora.api.router import Route
from remora.config import Settings


def all_routes(settings: Settings) -> list[Route]:
    return [
        *routes_system.routes(settings),
        *routes_jobs.routes(settings),
        *routes_batches.routes(settings),
        *routes_events.routes(settings),
        *routes_templates.routes(settings),
        *routes_schedules.routes(settings),
        *routes_servers.routes(settings),
        *routes_files.routes(settings),
        *routes_admin.routes(settings),
        *routes_tokens.routes(settings),
        *routes_webhooks.routes(settings),
    ]
