"""Typed settings: defaults < ./.env < TOML file < environment < command-line flags.

Every key lives in one section dataclass below, with its default, its kind
(``duration``, ``size``, ``bool``, ``int``, ``float``, ``str``, ``list``) and a
one-line description that ``config.example.toml`` and ``remora config init``
repeat.  ``load()`` records where each effective value came from
(``default``, ``dotenv:PATH:NAME``, ``file:PATH``, ``env:NAME``, ``flag``) so ``remora config show
--sources`` can tell a user why a value is what it is, and so every error
names the key, the source and what was expected.

The environment is read only through the mapping handed to ``load()``; core
modules receive a ``Settings`` and never look at ``os.environ`` themselves.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from remora.dotenv import DOTENV_FILE, POSTGRES_ENV, postgres_url, read_dotenv
from remora.errors import ConfigError
from remora.units import format_duration, format_size, parse_bool, parse_duration, parse_list, parse_size

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


def _key(default: Any, kind: str, doc: str, choices: tuple[str, ...] = ()) -> Any:
    meta = {"kind": kind, "doc": doc, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DatabaseSettings:
    url: str = _key("", "str", "Database URL: sqlite:///path.db, a plain path, or postgres://user:pass@host/db. Empty: SQLite in data_dir.")
    data_dir: str = _key("", "str", "Where Remora keeps its database, queue log, keys and token. Empty: $XDG_DATA_HOME/remora.")
    busy_timeout: float = _key(10.0, "duration", "How long a SQLite writer waits for the lock before giving up.")
    pool_size: int = _key(20, "int", "Most PostgreSQL connections one process keeps open.")


@dataclass
class QueueSettings:
    addr: str = _key("127.0.0.1:9000", "str", "NetQueue address: where `queue serve` listens and where clients connect.")
    name: str = _key("job_queue", "str", "Default queue name jobs are put on and workers reserve from.")
    persistence: bool = _key(True, "bool", "Keep the queue in an append-only log on disk (false: memory only).")
    data_dir: str = _key("", "str", "Directory of the queue's log and snapshots. Empty: <data_dir>/queue.")
    fsync: str = _key("always", "str", "When the log is fsynced: always (group commit), interval, never.", ("always", "interval", "never"))
    fsync_interval: float = _key(0.01, "duration", "With fsync = interval: the most time between fsyncs.")
    max_size: int = _key(100000, "int", "Most waiting jobs per queue; a PUT beyond it is refused with QUEUE_FULL.")
    worker_timeout: float = _key(30.0, "duration", "Lease time (ttr) of a reserved job; a worker heartbeat renews it.")
    max_attempts: int = _key(3, "int", "Deliveries of a job whose lease expires before it goes to the dead-letter queue.")
    token: str = _key(
        "",
        "str",
        'Shared token of the queue and its clients. Unset: read from token_file (`queue serve` and `up` create it). "": no token (loopback only).',
    )
    token_file: str = _key(
        "", "str", "File holding the queue token (created 0600 by `queue serve` and `up` when missing). Empty: <data_dir>/queue.token."
    )
    max_connections: int = _key(4096, "int", "Most client connections the queue server keeps open.")
    auth_timeout: float = _key(5.0, "duration", "A connection that has not authenticated this long after connecting is closed.")
    max_queues: int = _key(1000, "int", "Most distinct queue names the queue holds; a PUT naming one more is refused (TOO_MANY_QUEUES).")
    busy_poll: float = _key(
        0.0001, "duration", "After a reply, `queue serve` polls this long for the next request before sleeping (adaptive; 0: off)."
    )
    health_check_interval: float = _key(
        30.0,
        "duration",
        "Worker health check: a worker not heard from for this long counts as inactive in the queue's stats; after ten times this (holding no lease) it is forgotten.",
    )


@dataclass
class WorkerSettings:
    concurrency: int = _key(
        256,
        "int",
        "Jobs one worker process runs at once. A running job holds no thread (the worker's event loop reads every channel and pipe), only a few file descriptors and ~100 KiB; 256 keeps a fan-out to a few hundred hosts in one wave within the default 1024-fd limit. Per-server max_concurrent_jobs and rollouts still bound it.",
    )
    threads: int = _key(
        16,
        "int",
        "Threads of a worker for what blocks: half reserve, claim and start jobs (SSH handshakes, forks), half write outcomes; plus one event loop.",
    )
    pool_size: int = _key(16, "int", "Ignored (kept so older files load): a worker reserves only for free slots (docs/dispatch.md).")
    heartbeat_interval: float = _key(1.0, "duration", "How often a worker renews its leases and learns of cancels.")
    graceful_shutdown: float = _key(60.0, "duration", "On SIGTERM: how long running jobs may finish before they are stopped.")
    kill_grace: float = _key(5.0, "duration", "Between TERM and KILL when a job is canceled or times out.")
    queues: list[str] = _key([], "list", "Queues this worker reserves from. Empty: [queue.name].")
    id: str = _key("", "str", "Worker id shown in stats. Empty: <hostname>-<pid>.")
    local_user: str = _key("nobody", "str", "When the worker runs as root: the user `local` jobs run as. Empty: the worker's own account.")


@dataclass
class SSHSettings:
    connection_timeout: float = _key(30.0, "duration", "Time allowed to open a TCP connection and finish the SSH handshake.")
    execution_timeout: float = _key(300.0, "duration", "Default job timeout when a job does not set one.")
    keepalive_interval: float = _key(60.0, "duration", "SSH keepalive interval on pooled connections (0: off).")
    max_retries: int = _key(3, "int", "Retries of a connection that fails before the command started.")
    max_sessions_per_connection: int = _key(
        10,
        "int",
        "Most channels on one pooled connection (OpenSSH's MaxSessions default); a server that refuses one gets another connection.",
    )
    idle_timeout: float = _key(300.0, "duration", "A pooled connection unused this long is closed.")
    known_hosts: str = _key("", "str", "Remora's own known_hosts file. Empty: <data_dir>/known_hosts.")
    host_key_policy: str = _key(
        "accept-new", "str", "Unknown host keys: accept-new (pin on first use), strict, off.", ("accept-new", "strict", "off")
    )


@dataclass
class OutputSettings:
    flush_interval: float = _key(1.0, "duration", "Most time output waits in the worker before it is written to the database.")
    flush_lines: int = _key(10, "int", "Lines after which output is written at once.")
    buffer_size: int = _key(8192, "size", "Bytes read from a job's stream at a time.")
    max_bytes: int = _key(64 * 1024 * 1024, "size", "Most output kept per job; beyond it output is dropped with a marker.")
    compress: bool = _key(True, "bool", "Compress finished jobs' output in the database (zlib; readers see the same bytes).")


@dataclass
class APISettings:
    addr: str = _key("127.0.0.1:8080", "str", "Where `remora api` listens (host:port; ':8080' means all addresses).")
    url: str = _key("http://127.0.0.1:8080", "str", "Where client commands reach the API.")
    token: str = _key("", "str", "Token client commands send. Empty: the token file `remora up` wrote.")
    auth: bool = _key(True, "bool", "Require tokens. Turning it off is accepted only on loopback.")
    cors_allowed_origins: list[str] = _key([], "list", "Origins allowed by CORS (empty: none).")
    max_body_size: int = _key(1024 * 1024, "size", "Largest request body accepted (413 beyond).")
    max_timeout: int = _key(86400, "int", "Largest job timeout a request may ask for, in seconds.")
    threads: int = _key(16, "int", "Request threads of the WSGI server.")
    send_timeout: float = _key(
        30.0, "duration", "A client that accepts no response bytes for this long is disconnected (its request thread is freed)."
    )
    max_connections_per_client: int = _key(
        256, "int", "Open connections one client address may hold; beyond it a new connection is answered 503 and closed. 0: no cap."
    )
    auth_failures_per_second: float = _key(
        20.0, "float", "Refused tokens allowed per client address per second (burst: twice that); beyond it 429. 0: no limit."
    )
    retention: float = _key(0.0, "duration", "Finished jobs older than this are pruned automatically (0: keep all).")
    public_url: str = _key(
        "",
        "str",
        "The dashboard's address in notifications' links (e.g. https://remora.example.com). Empty: as the webhook's creator reached the API.",
    )
    schedule_grace: float = _key(
        30.0, "duration", "A schedule's slot found later than this (the scheduler was down) is recorded missed, not run (see catch_up)."
    )
    events_retention: float = _key(
        86400.0, "duration", "How long the change feed (/api/v1/events) keeps job and batch status changes; an older cursor gets 410."
    )


@dataclass
class SecuritySettings:
    secret_key: str = _key("", "str", "Key that encrypts secrets at rest. Empty: a key file in data_dir, created 0600.")
    allowed_shells: list[str] = _key(
        ["/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin/sh", "/usr/bin/zsh", "/bin/zsh"], "list", "Shells a script job may use."
    )
    max_upload_size: int = _key(10 * 1024 * 1024, "size", "Largest PEM file upload.")
    local_server_role: str = _key(
        "admin",
        "str",
        "Weakest API role that may run jobs on the `local` server (viewer, operator, admin).",
        ("viewer", "operator", "admin"),
    )
    secret_env_patterns: list[str] = _key(
        ["*PASSWORD*", "*TOKEN*", "*SECRET*", "*KEY*"],
        "list",
        "Job env names (globs, any case) whose values are stored encrypted and shown as ***.",
    )


@dataclass
class LoggingSettings:
    level: str = _key("info", "str", "debug, info, warning, error.", ("debug", "info", "warning", "warn", "error"))
    format: str = _key("text", "str", "text or json (one JSON object a line).", ("text", "json"))


@dataclass
class WebhookSettings:
    timeout: float = _key(10.0, "duration", "Time allowed for one delivery attempt (connect, send, answer).")
    senders: int = _key(8, "int", "Webhooks sent to at once by the API (one lane each: a slow receiver holds only its own).")
    interval: float = _key(1.0, "duration", "How often the API looks for deliveries to send.")
    backoff: float = _key(5.0, "duration", "Wait before the first retry of a failed delivery; doubled for each later one (plus jitter).")
    max_backoff: float = _key(3600.0, "duration", "Longest wait between two attempts of a delivery.")
    retry_for: float = _key(86400.0, "duration", "A delivery not answered with a 2xx this long after its event is given up (failed).")
    retention: float = _key(604800.0, "duration", "Finished deliveries older than this are deleted from the delivery log.")


@dataclass
class SMTPSettings:
    host: str = _key("", "str", "SMTP server that sends email notifications (mailto: webhooks). Empty: email is not sent.")
    port: int = _key(25, "int", "SMTP port (587 with starttls, 465 with ssl).")
    starttls: bool = _key(False, "bool", "Upgrade the connection with STARTTLS before logging in.")
    ssl: bool = _key(False, "bool", "Connect with TLS from the start (SMTPS).")
    user: str = _key("", "str", "SMTP login user. Empty: no login.")
    password: str = _key("", "str", "SMTP login password (or REMORA_SMTP_PASSWORD, or password_file).")
    password_file: str = _key("", "str", "File holding the SMTP password (must not be readable by group or others, e.g. 0600).")
    from_: str = _key("remora@localhost", "str", "The From address of notification emails.")
    timeout: float = _key(30.0, "duration", "Time allowed for talking to the SMTP server.")


@dataclass
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    ssh: SSHSettings = field(default_factory=SSHSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    api: APISettings = field(default_factory=APISettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    smtp: SMTPSettings = field(default_factory=SMTPSettings)
    sources: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    dotenv_file: str | None = None

    # -- derived paths -------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.database.data_dir).expanduser() if self.database.data_dir else default_data_dir()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'remora.db'}"

    @property
    def queue_data_dir(self) -> Path:
        return Path(self.queue.data_dir).expanduser() if self.queue.data_dir else self.data_dir / "queue"

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.ssh.known_hosts).expanduser() if self.ssh.known_hosts else self.data_dir / "known_hosts"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def queue_token_path(self) -> Path:
        return Path(self.queue.token_file).expanduser() if self.queue.token_file else self.data_dir / "queue.token"

    def queue_token(self, *, create: bool = False) -> str:
        """The queue's token: ``queue.token`` when set anywhere (even to ""), else the token file's content.

        Servers (``queue serve``, ``up``) pass ``create=True``: a missing file is
        created with a new random token (0600).  Clients read the file if it is
        there and send no token otherwise (the server then says it needs one)."""
        if self.sources.get("queue.token", "default") != "default":
            return self.queue.token
        path = self.queue_token_path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if not create:
                return ""
            return _create_token_file(path)
        except OSError as exc:
            raise ConfigError(f"cannot read the queue token file {path}: {exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"the queue token file {path} is empty: delete it to have a new token made, or set queue.token")
        return token

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), attr(key))

    def items(self) -> list[tuple[str, Any]]:
        """Every ``section.key`` with its effective value, in declaration order."""
        out = []
        for section in SECTIONS:
            obj = getattr(self, section)
            for f in fields(obj):
                out.append((f"{section}.{key_name(f.name)}", getattr(obj, f.name)))
        return out

    def masked(self) -> dict[str, dict[str, Any]]:
        """Effective values by section with secrets replaced by ``********``."""
        out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for dotted, value in self.items():
            section, key = dotted.split(".", 1)
            out[section][key] = mask(dotted, value)
        return out


def _create_token_file(path: Path) -> str:
    """Write a new random token to ``path`` (0600, never briefly wider; a file made meanwhile wins)."""
    import secrets

    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.link(tmp, path)  # fails if another process created the file first
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot create the queue token file {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return token


def mask(dotted: str, value: Any) -> Any:
    if dotted == "database.url" and isinstance(value, str):
        value = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1********@", value)
        return re.sub(r"([?&][^=&#]*(?:pass|secret|token|key)[^=&#]*=)[^&#]*", r"\1********", value, flags=re.IGNORECASE)
    if dotted in SECRET_KEYS and value:
        return "********"
    return value


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(base) / "remora"


def key_meta() -> dict[str, dict[str, Any]]:
    """``section.key`` -> {kind, doc, choices, default} for every setting."""
    out = {}
    defaults = Settings()
    for section in SECTIONS:
        obj = getattr(defaults, section)
        for f in fields(obj):
            out[f"{section}.{key_name(f.name)}"] = {**f.metadata, "default": getattr(obj, f.name)}
    return out


_EXPECTED = {
    "duration": "a duration such as 30s, 2m or 1h",
    "size": "a size such as 8192, 512KB or 10MB",
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "list": "a list of strings",
    "str": "a string",
}


def coerce(dotted: str, value: Any, source: str) -> Any:
    """Convert ``value`` to the kind of ``dotted``; a bad value names key, source, expectation."""
    meta = key_meta()[dotted]
    kind = meta["kind"]
    try:
        if kind == "duration":
            result: Any = parse_duration(value)
        elif kind == "size":
            result = parse_size(value)
        elif kind == "bool":
            result = parse_bool(value)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError("a whole number")
            result = int(str(value).strip())
            if result < 0:
                raise ValueError("a whole number that is not negative")
        elif kind == "float":
            result = float(value)
        elif kind == "list":
            result = parse_list(value)
        else:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError("a string")
            result = str(value)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        expected = message if message.startswith(("a ", "true")) else _EXPECTED[kind]
        raise ConfigError(
            f"{dotted} = {value!r} from {source}: expected {expected}",
            details={"key": dotted, "source": source, "expected": expected},
        ) from None
    choices = meta["choices"]
    if choices and str(result).lower() not in choices:
        raise ConfigError(
            f"{dotted} = {value!r} from {source}: expected one of {', '.join(choices)}",
            details={"key": dotted, "source": source, "expected": list(choices)},
        )
    if choices:
        result = str(result).lower()
    return result


# -- loading -------------------------------------------------------------


def config_candidates(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME", "~")).expanduser()
    xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [Path("remora.toml"), xdg / "remora" / "config.toml", Path("/etc/remora/config.toml")]


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """The first config file: ``--config``, ``$REMORA_CONFIG``, then the usual places."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} (from --config) does not exist")
        return path
    if env.get("REMORA_CONFIG"):
        path = Path(env["REMORA_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} (from env:REMORA_CONFIG) does not exist")
        return path
    for path in config_candidates(env):
        if path.is_file():
            return path
    return None


def secret_env_names() -> frozenset[str]:
    """Environment variable names that carry a secret setting (database URL, tokens, the secret key).

    A local job does not inherit them from the worker: its output is visible
    to every viewer, and ``env`` in a job would print them."""
    names = {_env_key(dotted) for dotted in SECRET_KEYS}
    names.update(name for name, dotted in ENV_ALIASES.items() if dotted in SECRET_KEYS)
    return frozenset(names)


JOB_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_JOB_ENV_NAME = 255


def job_env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a job's environment variable (None when it can): names are shell identifiers."""
    if len(name) > MAX_JOB_ENV_NAME or not JOB_ENV_NAME.match(name):
        return (
            f"variable {name[:64]!r} is not a valid name (letters, digits and _, not starting with a digit, "
            f"at most {MAX_JOB_ENV_NAME} characters)"
        )
    return None


def _env_key(dotted: str) -> str:
    return "REMORA_" + dotted.replace(".", "_").upper()


def load(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings: defaults < ``.env`` (working directory) < TOML file < environment < ``overrides``.

    ``.env`` and the environment use the same names (``REMORA_*``, the seed's
    aliases, ``POSTGRES_*``, which make ``database.url`` when ``DATABASE_URL`` is absent).

    ``overrides`` maps ``section.key`` to values given as command-line flags
    (``None`` values are ignored, so callers can pass every flag as is).
    """
    env = os.environ if env is None else env
    settings = Settings()
    meta = key_meta()
    sources = {dotted: "default" for dotted in meta}

    def assign(dotted: str, value: Any, source: str) -> None:
        section, key = dotted.split(".", 1)
        setattr(getattr(settings, section), attr(key), coerce(dotted, value, source))
        sources[dotted] = source

    def apply_env(values: Mapping[str, str], source: str) -> None:
        # Aliases first, so the explicit REMORA_* names win over the seed's names.
        if values.get("DATABASE_URL", "") == "" and any(values.get(n, "") != "" for n in POSTGRES_ENV):
            assign("database.url", postgres_url(values), source.format(name="POSTGRES_*"))
        for name, dotted in ENV_ALIASES.items():
            if values.get(name, "") != "":
                value = values[name]
                if name == "SERVER_ADDR" and value.startswith(":"):
                    value = "0.0.0.0" + value
                assign(dotted, value, source.format(name=name))
        for dotted in meta:
            name = _env_key(dotted)
            if values.get(name, "") != "":
                assign(dotted, values[name], source.format(name=name))

    # .env in the working directory: above the defaults, below everything else.
    dotenv = Path(DOTENV_FILE)
    if dotenv.is_file():
        settings.dotenv_file = str(dotenv.resolve())
        apply_env(read_dotenv(dotenv), f"dotenv:{settings.dotenv_file}:{{name}}")
    path = find_config_file(config_file, env)
    if path is not None:
        settings.config_file = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for section, values in data.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            for key, value in values.items():
                dotted = f"{section}.{key}"
                if dotted not in meta:
                    raise ConfigError(f"{path}: unknown key {dotted}")
                assign(dotted, value, f"file:{path}")

    apply_env(env, "env:{name}")

    for dotted, value in (overrides or {}).items():
        if value is not None:
            if dotted not in meta:
                raise ConfigError(f"unknown setting {dotted}")
            assign(dotted, value, "flag")

    settings.sources = sources
    return settings


def with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """A copy of ``settings`` with flag values applied on top."""
    new = dataclasses.replace(
        settings,
        **{s: dataclasses.replace(getattr(settings, s)) for s in SECTIONS},
        sources=dict(settings.sources),
    )
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        setattr(getattr(new, section), attr(key), coerce(dotted, value, "flag"))
        new.sources[dotted] = "flag"
    return new


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    """``host:port`` / ``:port`` / ``[::1]:port`` / ``host`` -> (host, port)."""
    text = addr.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    try:
        port_num = int(port)
    except ValueError:
        raise ConfigError(f"address {addr!r}: port must be a number") from None
    return host or "0.0.0.0", port_num


# -- config files --------------------------------------------------------


def render_toml(settings: Settings | None = None, *, commented: bool = True) -> str:
    """A TOML config documenting every key (values from ``settings`` or the defaults)."""
    import tomli_w

    settings = settings or Settings()
    meta = key_meta()
    lines = [
        "# Remora configuration.",
        "# Precedence: defaults < this file < environment (REMORA_<SECTION>_<KEY>) < command-line flags.",
        "# Durations accept 250ms, 30s, 2m, 1h; sizes accept 8192, 512KB, 10MB.",
        "",
    ]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for f in fields(getattr(settings, section)):
            dotted = f"{section}.{key_name(f.name)}"
            lines.append(f"# {meta[dotted]['doc']}")
            value = getattr(getattr(settings, section), f.name)
            value = _toml_value(dotted, value)
            rendered = tomli_w.dumps({key_name(f.name): value}).strip()
            if dotted in UNSET_BY_DEFAULT and value == meta[dotted]["default"]:
                rendered = "# " + rendered  # set, even to the default, it means something else than unset
            lines.append(rendered)
        lines.append("")
    return "\n".join(lines)


def _toml_value(dotted: str, value: Any) -> Any:
    kind = key_meta()[dotted]["kind"]
    if kind == "duration":
        return format_duration(value)
    if kind == "size":
        return format_size(value)
    return value
