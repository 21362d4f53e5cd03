"""The worker's servers: their rows (read again after ``SERVER_TTL``) and an executor per row.

A job reads its server's row here, not from the database each time; the rows a claim needs are
read in one query (``prefetch``): a fan-out starts jobs on hundreds of servers at once.  An
executor is made once per row (its credential decrypted once, not per job) and made again when
the row is read again, so an edited server reaches running workers within ``SERVER_TTL``.
"""

from __future__ import annotations

import logging
import time

from remora import models
from remora.config import Settings
from remora.crypto import SecretBox
from remora.executor import executor_for
from remora.executor.base import Executor
from remora.executor.sshpool import SSHPool
from remora.models import Server
from remora.services.targets import target_for

log = logging.getLogger(__name__)

SERVER_TTL = 5.0  # a server's edited settings reach running workers within this
PREFETCH_CHUNK = 500  # server ids per prefetch query (SQLite's bound parameters stay well under its limit)


class WorkerServers:
    """Server rows cached for ``SERVER_TTL`` seconds, and each row's executor (thread-safe enough: dict writes)."""

    def __init__(self, settings: Settings, secrets: SecretBox, pool: SSHPool) -> None:
        self.settings = settings
        self.secrets = secrets
        self.pool = pool
        self._rows: dict[str, tuple[float, Server]] = {}
        self._executors: dict[str, tuple[Server, Executor]] = {}

    def prefetch(self, server_ids: list[str | None]) -> None:
        """Read the rows of these servers that are not cached (or are stale) in one query.

        Best effort: ``row`` reads what this did not.
        """
        now = time.monotonic()
        stale = [sid for sid in dict.fromkeys(server_ids) if sid and not (sid in self._rows and self._rows[sid][0] > now)]
        if len(stale) < 2:
            return
        try:
            for start in range(0, len(stale), PREFETCH_CHUNK):
                for server in Server.select().where(Server.id.in_(stale[start : start + PREFETCH_CHUNK])):
                    self._rows[server.id] = (now + SERVER_TTL, server)
        except models.DatabaseError as exc:
            log.debug("server rows not prefetched (%s); each job reads its own", exc)

    def row(self, server_id: str) -> Server:
        """The server's row, cached for SERVER_TTL seconds (one query less per job)."""
        now = time.monotonic()
        cached = self._rows.get(server_id)
        if cached and cached[0] > now:
            return cached[1]
        server = Server.get_by_id(server_id)
        self._rows[server_id] = (now + SERVER_TTL, server)
        return server

    def executor(self, server: Server) -> Executor:
        """The server's executor, reused while its row is the cached one (secrets decrypted once, not per job).

        The executor gets a ``Target``: the row's connection facts with its credential decrypted here.
        """
        cached = self._executors.get(server.id)
        if cached is not None and cached[0] is server:
            return cached[1]
        executor = executor_for(target_for(server, self.settings, self.secrets), self.settings, pool=self.pool)
        self._executors[server.id] = (server, executor)
        return executor
