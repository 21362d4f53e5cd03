"""Executors run one job's command on its server: ``base`` (the contract), ``ssh`` (paramiko, pooled), ``local``.

``executor_for`` picks the one for a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from remora.config import Settings
    from remora.crypto import SecretBox
    from remora.executor.base import Executor
    from remora.models import Server


def executor_for(server: Server, settings: Settings, secrets: SecretBox, **kwargs: object) -> Executor:
    """The executor for ``server``: the local one for auth_type ``local``, else SSH (pooled)."""
    from remora.models import AuthType

    if server.auth_type == AuthType.LOCAL.value:
        from remora.executor.local import LocalExecutor

        return LocalExecutor(settings)
    from remora.executor.ssh import SSHExecutor

    return SSHExecutor(server, settings, secrets, **kwargs)  # type: ignore[arg-type]


__all__ = ["executor_for"]
