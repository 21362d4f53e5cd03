"""The RemoraError family and the process exit codes.

Every error Remora raises on purpose is a ``RemoraError``. Each carries a
machine-readable ``code`` (UPPER_SNAKE, the same string the REST API puts in
its error envelope), an HTTP ``status`` and an ``exit_code`` for the CLI, so
the one place that renders an error (``cli.main`` or the API's error handler)
never has to guess.  This module imports nothing of ours.
"""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """Exit codes of the ``remora`` command.

    With ``--wait``/``--follow`` a client command exits with the job's own exit
    code (0-255) when the job ran; Remora's own outcomes use the codes below,
    chosen from the range shells and sysexits leave free.
    """

    OK = 0
    FAILURE = 1  # a job failed without an exit code of its own (lost worker, SSH error)
    USAGE = 2  # bad command line, bad job file, bad config value
    CONFIG = 78  # EX_CONFIG: the configuration cannot be used
    API_UNAVAILABLE = 69  # EX_UNAVAILABLE: cannot reach the API / queue / database
    AUTH = 77  # EX_NOPERM: missing, wrong or too weak a token
    SOFTWARE = 70  # EX_SOFTWARE: an internal error (a bug: please report it)
    JOB_TIMEOUT = 124  # as timeout(1): the job hit its timeout
    JOB_CANCELED = 125  # the job was canceled
    WAIT_TIMEOUT = 75  # EX_TEMPFAIL: `--wait`/`jobs wait --timeout` gave up waiting
    INTERRUPTED = 130  # Ctrl-C


class RemoraError(Exception):
    """Base of every error Remora raises on purpose."""

    code = "ERROR"
    status = 400
    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ConfigError(RemoraError):
    """A configuration value is missing or malformed (names key and source)."""

    code = "CONFIG_ERROR"
    exit_code = ExitCode.CONFIG


class DatabaseMissing(ConfigError):
    """A command that needs an existing database found none (nothing was created); ``location`` says where it looked."""

    code = "DATABASE_MISSING"

    def __init__(self, message: str, *, location: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.location = location


class ValidationError(RemoraError):
    """Input does not match what is expected; ``details`` maps field -> message."""

    code = "VALIDATION_ERROR"
    exit_code = ExitCode.USAGE


class NotFound(RemoraError):
    code = "NOT_FOUND"
    status = 404
    exit_code = ExitCode.FAILURE


class Conflict(RemoraError):
    code = "CONFLICT"
    status = 409
    exit_code = ExitCode.FAILURE


class Gone(RemoraError):
    """What was asked for existed once and is no longer kept (e.g. a change-feed cursor older than the retained changes)."""

    code = "GONE"
    status = 410


class PayloadTooLarge(RemoraError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413
    exit_code = ExitCode.USAGE


class Unauthorized(RemoraError):
    code = "UNAUTHORIZED"
    status = 401
    exit_code = ExitCode.AUTH


class Forbidden(RemoraError):
    code = "FORBIDDEN"
    status = 403
    exit_code = ExitCode.AUTH


class Unavailable(RemoraError):
    """A service Remora depends on (queue, database, API) cannot be reached."""

    code = "SERVICE_UNAVAILABLE"
    status = 503
    exit_code = ExitCode.API_UNAVAILABLE

    def __init__(self, message: str, *, retry_after: int = 5, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class QueueError(RemoraError):
    """An error answered by NetQueue; ``code`` is the protocol's error name."""

    code = "QUEUE_ERROR"
    status = 503
    exit_code = ExitCode.API_UNAVAILABLE

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        if code:
            self.code = code


class QueueFull(QueueError):
    code = "QUEUE_FULL"


class QueueUnavailable(Unavailable):
    code = "QUEUE_UNAVAILABLE"


class JobFileError(ValidationError):
    """A YAML job file is invalid; the message starts with ``file:line:column``."""

    code = "JOB_FILE_ERROR"


class ExecutionError(RemoraError):
    """Running a command failed before or outside the command itself."""

    code = "EXECUTION_ERROR"
    status = 503


class SSHError(ExecutionError):
    code = "SSH_ERROR"


class SSHAuthError(SSHError):
    """The server refused the credentials, or none usable are stored (never retried)."""

    code = "SSH_AUTH_ERROR"


class HostKeyError(SSHError):
    """The server's host key is unknown (strict) or changed; names the fingerprints."""

    code = "HOST_KEY_ERROR"


class SecretError(RemoraError):
    """A secret cannot be decrypted (wrong or missing secret key)."""

    code = "SECRET_ERROR"
    status = 500
    exit_code = ExitCode.CONFIG
