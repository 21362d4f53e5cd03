"""Executors run one job's command on its target: ``base`` (the contract), ``target`` (where, plain facts),
``ssh`` (paramiko, pooled), ``local``.  They know no database: the worker hands them a ``Target``.

``executor_for`` picks the one for a target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from remora.executor.target import AuthKind, Target

if TYPE_CHECKING:
    from remora.config import Settings
    from remora.executor.base import Executor
    from remora.executor.sshpool import SSHPool


def executor_for(target: Target, settings: Settings, *, pool: SSHPool | None = None) -> Executor:
    """The executor for ``target``: the local one for auth ``local``, else SSH (pooled)."""
    if target.auth is AuthKind.LOCAL:
        from remora.executor.local import LocalExecutor

        return LocalExecutor(settings)
    from remora.executor.ssh import SSHExecutor

    return SSHExecutor(target, settings, pool=pool)


__all__ = ["AuthKind", "Target", "executor_for"]
