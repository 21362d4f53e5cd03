"""Typed settings: defaults < ./.env < TOML file < environment < command-line flags.

Every key lives in one section dataclass of ``remora.configkeys``, with its
default, its kind (``duration``, ``size``, ``bool``, ``int``, ``float``,
``str``, ``list``) and a one-line description that ``config.example.toml`` and
``remora config init`` repeat.  ``load()`` records where each effective value came from
(``default``, ``dotenv:PATH:NAME``, ``file:PATH``, ``env:NAME``, ``flag``) so ``remora config show
--sources`` can tell a user why a value is what it is, and so every error
names the key, the source and what was expected.

The environment is read only through the mapping handed to ``load()``; core
modules receive a ``Settings`` and never look at ``os.environ`` themselves.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from remora.configkeys import (
    ENV_ALIASES,
    SECRET_KEYS,
    SECTIONS,
    UNSET_BY_DEFAULT,
    APISettings,
    DatabaseSettings,
    LoggingSettings,
    OutputSettings,
    QueueSettings,
    SecuritySettings,
    SMTPSettings,
    SSHSettings,
    WebhookSettings,
    WorkerSettings,
    attr,
    key_name,
)
from remora.dotenv import DOTENV_FILE, POSTGRES_ENV, postgres_url, read_dotenv
from remora.errors import ConfigError
from remora.units import format_duration, format_size, parse_bool, parse_duration, parse_list, parse_size


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
