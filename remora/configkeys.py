"""Every configuration key: its section, default, kind and one-line description.

One dataclass per section of the TOML file (``[database]``, ``[queue]`` ...);
each field is declared once with ``key(default, kind, doc)``, where ``kind``
is ``duration``, ``size``, ``bool``, ``int``, ``float``, ``str`` or ``list``.
``remora.config`` reads values into them (defaults < .env < TOML < environment
< flags) and renders ``config.example.toml`` from them; the seed README's
environment variable names are accepted as aliases (``ENV_ALIASES``).
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("database", "queue", "worker", "ssh", "output", "api", "security", "logging", "webhooks", "smtp")
SECRET_KEYS = {"database.url", "queue.token", "api.token", "security.secret_key", "smtp.password"}
# Keys whose "not set anywhere" differs from their default value: the example config leaves them commented out.
UNSET_BY_DEFAULT = {"queue.token"}

# The seed README's environment variable names, accepted as aliases.
ENV_ALIASES: dict[str, str] = {
    "DATABASE_URL": "database.url",
    "NETQUEUE_ADDR": "queue.addr",
    "SERVER_ADDR": "api.addr",
    "QUEUE_NAME": "queue.name",
    "QUEUE_PERSISTENCE": "queue.persistence",
    "QUEUE_MAX_SIZE": "queue.max_size",
    "QUEUE_WORKER_TIMEOUT": "queue.worker_timeout",
    "QUEUE_HEALTH_CHECK_INTERVAL": "queue.health_check_interval",
    "WORKER_CONCURRENCY": "worker.concurrency",
    "WORKER_POOL_SIZE": "worker.pool_size",
    "WORKER_HEARTBEAT_INTERVAL": "worker.heartbeat_interval",
    "WORKER_GRACEFUL_SHUTDOWN": "worker.graceful_shutdown",
    "SSH_CONNECTION_TIMEOUT": "ssh.connection_timeout",
    "SSH_EXECUTION_TIMEOUT": "ssh.execution_timeout",
    "SSH_KEEPALIVE_INTERVAL": "ssh.keepalive_interval",
    "SSH_MAX_RETRIES": "ssh.max_retries",
    "OUTPUT_UPDATE_INTERVAL": "output.flush_interval",
    "OUTPUT_LINE_THRESHOLD": "output.flush_lines",
    "OUTPUT_BUFFER_SIZE": "output.buffer_size",
    "CORS_ALLOWED_ORIGINS": "api.cors_allowed_origins",
    "ALLOWED_SHELLS": "security.allowed_shells",
    "MAX_UPLOAD_SIZE": "security.max_upload_size",
    "LOG_LEVEL": "logging.level",
    "LOG_FORMAT": "logging.format",
    "REMORA_API_URL": "api.url",
    "REMORA_TOKEN": "api.token",
    "REMORA_SECRET_KEY": "security.secret_key",
    "REMORA_DATA_DIR": "database.data_dir",
}


def key_name(field_name: str) -> str:
    """A setting's name from its field's: a Python keyword is spelled with a trailing ``_`` (``smtp.from`` is ``from_``)."""
    return field_name[:-1] if field_name.endswith("_") and keyword.iskeyword(field_name[:-1]) else field_name


def attr(key: str) -> str:
    """The field of a setting's name (the inverse of ``key_name``)."""
    return key + "_" if keyword.iskeyword(key) else key


def key(default: Any, kind: str, doc: str, choices: tuple[str, ...] = ()) -> Any:
    meta = {"kind": kind, "doc": doc, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DatabaseSettings:
    url: str = key("", "str", "Database URL: sqlite:///path.db, a plain path, or postgres://user:pass@host/db. Empty: SQLite in data_dir.")
    data_dir: str = key("", "str", "Where Remora keeps its database, queue log, keys and token. Empty: $XDG_DATA_HOME/remora.")
    busy_timeout: float = key(10.0, "duration", "How long a SQLite writer waits for the lock before giving up.")
    pool_size: int = key(20, "int", "Most PostgreSQL connections one process keeps open.")


@dataclass
class QueueSettings:
    addr: str = key("127.0.0.1:9000", "str", "NetQueue address: where `queue serve` listens and where clients connect.")
    name: str = key("job_queue", "str", "Default queue name jobs are put on and workers reserve from.")
    persistence: bool = key(True, "bool", "Keep the queue in an append-only log on disk (false: memory only).")
    data_dir: str = key("", "str", "Directory of the queue's log and snapshots. Empty: <data_dir>/queue.")
    fsync: str = key("always", "str", "When the log is fsynced: always (group commit), interval, never.", ("always", "interval", "never"))
    fsync_interval: float = key(0.01, "duration", "With fsync = interval: the most time between fsyncs.")
    max_size: int = key(100000, "int", "Most waiting jobs per queue; a PUT beyond it is refused with QUEUE_FULL.")
    worker_timeout: float = key(30.0, "duration", "Lease time (ttr) of a reserved job; a worker heartbeat renews it.")
    max_attempts: int = key(3, "int", "Deliveries of a job whose lease expires before it goes to the dead-letter queue.")
    token: str = key(
        "",
        "str",
        'Shared token of the queue and its clients. Unset: read from token_file (`queue serve` and `up` create it). "": no token (loopback only).',
    )
    token_file: str = key(
        "", "str", "File holding the queue token (created 0600 by `queue serve` and `up` when missing). Empty: <data_dir>/queue.token."
    )
    max_connections: int = key(4096, "int", "Most client connections the queue server keeps open.")
    auth_timeout: float = key(5.0, "duration", "A connection that has not authenticated this long after connecting is closed.")
    max_queues: int = key(1000, "int", "Most distinct queue names the queue holds; a PUT naming one more is refused (TOO_MANY_QUEUES).")
    busy_poll: float = key(
        0.0001, "duration", "After a reply, `queue serve` polls this long for the next request before sleeping (adaptive; 0: off)."
    )
    health_check_interval: float = key(
        30.0,
        "duration",
        "Worker health check: a worker not heard from for this long counts as inactive in the queue's stats; after ten times this (holding no lease) it is forgotten.",
    )


@dataclass
class WorkerSettings:
    concurrency: int = key(
        256,
        "int",
        "Jobs one worker process runs at once. A running job holds no thread (the worker's event loop reads every channel and pipe), only a few file descriptors and ~100 KiB; 256 keeps a fan-out to a few hundred hosts in one wave within the default 1024-fd limit. Per-server max_concurrent_jobs and rollouts still bound it.",
    )
    threads: int = key(
        16,
        "int",
        "Threads of a worker for what blocks: up to this many start jobs at once (forks; SSH channels, and before a server's first job its connect, handshake and authentication), made for a burst of starts and ended 2 s after it; one reserves and claims for every free slot at once, two write the outcomes of the jobs that ended together; plus one event loop and a quarter of this for its blocking calls.",
    )
    pool_size: int = key(16, "int", "Ignored (kept so older files load): a worker reserves only for free slots (docs/dispatch.md).")
    heartbeat_interval: float = key(1.0, "duration", "How often a worker renews its leases and learns of cancels.")
    graceful_shutdown: float = key(60.0, "duration", "On SIGTERM: how long running jobs may finish before they are stopped.")
    kill_grace: float = key(5.0, "duration", "Between TERM and KILL when a job is canceled or times out.")
    queues: list[str] = key([], "list", "Queues this worker reserves from. Empty: [queue.name].")
    id: str = key("", "str", "Worker id shown in stats. Empty: <hostname>-<pid>.")
    local_user: str = key("nobody", "str", "When the worker runs as root: the user `local` jobs run as. Empty: the worker's own account.")


@dataclass
class SSHSettings:
    connection_timeout: float = key(30.0, "duration", "Time allowed to open a TCP connection and finish the SSH handshake.")
    execution_timeout: float = key(300.0, "duration", "Default job timeout when a job does not set one.")
    keepalive_interval: float = key(60.0, "duration", "SSH keepalive interval on pooled connections (0: off).")
    max_retries: int = key(3, "int", "Retries of a connection that fails before the command started.")
    max_sessions_per_connection: int = key(
        10,
        "int",
        "Most channels on one pooled connection (OpenSSH's MaxSessions default); a server that refuses one gets another connection.",
    )
    idle_timeout: float = key(300.0, "duration", "A pooled connection unused this long is closed.")
    known_hosts: str = key("", "str", "Remora's own known_hosts file. Empty: <data_dir>/known_hosts.")
    transport: str = key(
        "auto",
        "str",
        "SSH implementation for jobs: auto (libssh2 through ssh2-python where it can serve the server, else paramiko), libssh2, paramiko.",
        ("auto", "libssh2", "paramiko"),
    )
    host_key_policy: str = key(
        "accept-new", "str", "Unknown host keys: accept-new (pin on first use), strict, off.", ("accept-new", "strict", "off")
    )


@dataclass
class OutputSettings:
    flush_interval: float = key(1.0, "duration", "Most time output waits in the worker before it is written to the database.")
    flush_lines: int = key(10, "int", "Lines after which output is written at once.")
    buffer_size: int = key(8192, "size", "Bytes read from a job's stream at a time.")
    max_bytes: int = key(64 * 1024 * 1024, "size", "Most output kept per job; beyond it output is dropped with a marker.")
    compress: bool = key(True, "bool", "Compress finished jobs' output in the database (zlib; readers see the same bytes).")


@dataclass
class APISettings:
    addr: str = key("127.0.0.1:8080", "str", "Where `remora api` listens (host:port; ':8080' means all addresses).")
    url: str = key("http://127.0.0.1:8080", "str", "Where client commands reach the API.")
    token: str = key("", "str", "Token client commands send. Empty: the token file `remora up` wrote.")
    auth: bool = key(True, "bool", "Require tokens. Turning it off is accepted only on loopback.")
    cors_allowed_origins: list[str] = key([], "list", "Origins allowed by CORS (empty: none).")
    max_body_size: int = key(1024 * 1024, "size", "Largest request body accepted (413 beyond).")
    max_timeout: int = key(86400, "int", "Largest job timeout a request may ask for, in seconds.")
    threads: int = key(16, "int", "Request threads of the WSGI server.")
    send_timeout: float = key(
        30.0, "duration", "A client that accepts no response bytes for this long is disconnected (its request thread is freed)."
    )
    max_connections_per_client: int = key(
        256, "int", "Open connections one client address may hold; beyond it a new connection is answered 503 and closed. 0: no cap."
    )
    auth_failures_per_second: float = key(
        20.0, "float", "Refused tokens allowed per client address per second (burst: twice that); beyond it 429. 0: no limit."
    )
    retention: float = key(0.0, "duration", "Finished jobs older than this are pruned automatically (0: keep all).")
    public_url: str = key(
        "",
        "str",
        "The dashboard's address in notifications' links (e.g. https://remora.example.com). Empty: as the webhook's creator reached the API.",
    )
    schedule_grace: float = key(
        30.0, "duration", "A schedule's slot found later than this (the scheduler was down) is recorded missed, not run (see catch_up)."
    )
    events_retention: float = key(
        86400.0, "duration", "How long the change feed (/api/v1/events) keeps job and batch status changes; an older cursor gets 410."
    )


@dataclass
class SecuritySettings:
    secret_key: str = key("", "str", "Key that encrypts secrets at rest. Empty: a key file in data_dir, created 0600.")
    allowed_shells: list[str] = key(
        ["/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin/sh", "/usr/bin/zsh", "/bin/zsh"], "list", "Shells a script job may use."
    )
    max_upload_size: int = key(10 * 1024 * 1024, "size", "Largest PEM file upload.")
    local_server_role: str = key(
        "admin",
        "str",
        "Weakest API role that may run jobs on the `local` server (viewer, operator, admin).",
        ("viewer", "operator", "admin"),
    )
    secret_env_patterns: list[str] = key(
        ["*PASSWORD*", "*TOKEN*", "*SECRET*", "*KEY*"],
        "list",
        "Job env names (globs, any case) whose values are stored encrypted and shown as ***.",
    )


@dataclass
class LoggingSettings:
    level: str = key("info", "str", "debug, info, warning, error.", ("debug", "info", "warning", "warn", "error"))
    format: str = key("text", "str", "text or json (one JSON object a line).", ("text", "json"))


@dataclass
class WebhookSettings:
    timeout: float = key(10.0, "duration", "Time allowed for one delivery attempt (connect, send, answer).")
    senders: int = key(8, "int", "Webhooks sent to at once by the API (one lane each: a slow receiver holds only its own).")
    interval: float = key(1.0, "duration", "How often the API looks for deliveries to send.")
    backoff: float = key(5.0, "duration", "Wait before the first retry of a failed delivery; doubled for each later one (plus jitter).")
    max_backoff: float = key(3600.0, "duration", "Longest wait between two attempts of a delivery.")
    retry_for: float = key(86400.0, "duration", "A delivery not answered with a 2xx this long after its event is given up (failed).")
    retention: float = key(604800.0, "duration", "Finished deliveries older than this are deleted from the delivery log.")


@dataclass
class SMTPSettings:
    host: str = key("", "str", "SMTP server that sends email notifications (mailto: webhooks). Empty: email is not sent.")
    port: int = key(25, "int", "SMTP port (587 with starttls, 465 with ssl).")
    starttls: bool = key(False, "bool", "Upgrade the connection with STARTTLS before logging in.")
    ssl: bool = key(False, "bool", "Connect with TLS from the start (SMTPS).")
    user: str = key("", "str", "SMTP login user. Empty: no login.")
    password: str = key("", "str", "SMTP login password (or REMORA_SMTP_PASSWORD, or password_file).")
    password_file: str = key("", "str", "File holding the SMTP password (must not be readable by group or others, e.g. 0600).")
    from_: str = key("remora@localhost", "str", "The From address of notification emails.")
    timeout: float = key(30.0, "duration", "Time allowed for talking to the SMTP server.")
