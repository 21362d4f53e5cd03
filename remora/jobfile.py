"""YAML job files -> validated ``JobSpec`` (the format is ``man/remora-jobfile.5``).

A file holds one job (a mapping of job fields), a ``jobs:`` list (with
optional ``defaults:`` merged into every job), or several YAML documents of
either kind.  Every error is a ``JobFileError`` whose message starts with
``file:line:column`` (1-based) and names the field, the value and what was
expected, so an editor can jump to it.

This is the only module that imports ``yaml``.  Values are built from the
composed node tree (not ``yaml.safe_load``) so every value keeps its position.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from remora.config import job_env_name_problem
from remora.errors import JobFileError
from remora.units import parse_job_timeout

try:  # libyaml when present: faster, same marks
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

FIELDS = (
    "name",
    "command",
    "args",
    "script",
    "script_file",
    "shell",
    "servers",
    "priority",
    "timeout",
    "retries",
    "env",
    "secret_env",
    "pty",
    "queue",
    "rollout",
    "description",
    "parameters",
    "run_at",
)
DEFAULT_SERVERS = ["local"]
ROLLOUT_LIMIT = re.compile(r"^\d{1,9}%?$")


@dataclass
class JobSpec:
    """One job to submit: what to run and where -- from a job file, an API body or a copied job.

    Fields left ``None`` are unset: the API fills in its defaults (``remora.services.jobs.job_spec``:
    priority 5, the configured timeout, no retries, no pty).  A job file's jobs run on ``local``
    unless they name ``servers``.
    """

    command: str = ""
    args: str = ""
    script: str | None = None
    shell: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # stored encrypted, never shown, masked in output
    workdir: str | None = None
    pty: bool | None = None
    name: str | None = None
    priority: int | None = None
    timeout: int | None = None
    retries: int | None = None
    queue: str | None = None
    server_id: str | None = None
    server_ids: list[str] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    rollout: dict[str, Any] | None = None  # a fan-out's {"concurrency": N | "P%", "max_failures": N | "P%"}
    description: str | None = None  # a template's (``remora templates push``)
    parameters: list[dict[str, Any]] | None = None  # typed parameters (remora.params): {{ name }}, REMORA_PARAM_<NAME>
    run_at: Any = None  # start no earlier than this: RFC 3339 text, or naive UTC once validated (services.jobs.parse_run_at)
    source: str = ""  # file:line:column of the job, for messages

    def payload(self) -> dict[str, Any]:
        """The JSON body for the API (fields left unset are omitted)."""
        body: dict[str, Any] = {"servers": list(self.servers)}
        if self.script is not None:
            body["script"] = self.script
            if self.shell:
                body["shell"] = self.shell
        else:
            body["command"] = self.command
        if self.args:
            body["args"] = self.args
        for key in ("name", "priority", "timeout", "retries", "pty", "queue", "workdir", "server_id"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.server_ids:
            body["server_ids"] = list(self.server_ids)
        if self.env:
            body["env"] = dict(self.env)
        if self.secret_env:
            body["secret_env"] = dict(self.secret_env)
        if self.rollout:
            body["rollout"] = dict(self.rollout)
        if self.run_at is not None:
            body["run_at"] = self.run_at if isinstance(self.run_at, str) else self.run_at.isoformat() + "Z"
        return body

    def template_body(self) -> dict[str, Any]:
        """The JSON body that saves this job as a template (``POST /api/v1/templates``): it needs a name."""
        body = self.payload()
        for key in ("pty", "queue", "workdir", "server_id", "server_ids", "run_at"):
            body.pop(key, None)
        body["name"] = self.name
        body["description"] = self.description or ""
        body["parameters"] = list(self.parameters or [])
        return body

    def with_parameters(self, given: dict[str, Any]) -> JobSpec:
        """This job with its parameters bound: each ``{{ name }}`` quoted, ``REMORA_PARAM_<NAME>`` exported (remora.params)."""
        from remora import params

        declared = params.check_parameters(self.parameters or [])
        params.check_placeholders({"command": self.command, "args": self.args, "script": self.script}, declared)
        values = params.bind(declared, given)
        env, secret = params.export(declared, values)
        return dataclasses.replace(
            self,
            command=params.substitute(self.command, values),
            args=params.substitute(self.args, values),
            script=params.substitute(self.script, values) if self.script is not None else None,
            env={**self.env, **env},
            secret_env={**self.secret_env, **secret},
            parameters=None,
        )


@dataclass
class _Val:
    """A value with the position of its node."""

    value: Any
    line: int
    column: int


class _Builder:
    """Turns composed YAML nodes into plain values, remembering positions of mapping values."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.constructor = yaml.constructor.SafeConstructor()

    def where(self, node: yaml.Node) -> str:
        return f"{self.filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def error(self, node: yaml.Node, message: str) -> JobFileError:
        pos = self.where(node)
        return JobFileError(
            f"{pos}: {message}", details={"file": self.filename, "line": node.start_mark.line + 1, "column": node.start_mark.column + 1}
        )

    def scalar(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise self.error(node, f"bad value: {exc}") from None
        return None

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what}: expected a mapping of fields, got {_kind(node)}")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"{what}: keys must be strings, got {key!r}")
            if key in out:
                raise self.error(key_node, f"duplicate key {key!r}")
            out[key] = (key_node, value_node)
        return out


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the scalar {node.value!r}"


def load_file(path: str | Path, overrides: list[str] | None = None) -> list[JobSpec]:
    """Read and validate a job file (``-`` is stdin); ``overrides`` are ``key=value`` for every job."""
    if str(path) == "-":
        import sys

        return load_text(sys.stdin.read(), "<stdin>", base_dir=Path.cwd(), overrides=overrides)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFileError(f"{path}: cannot read: {exc}") from None
    return load_text(text, str(path), base_dir=p.resolve().parent, overrides=overrides)


def load_text(text: str, filename: str = "<string>", *, base_dir: Path | None = None, overrides: list[str] | None = None) -> list[JobSpec]:
    builder = _Builder(filename)
    base = base_dir or Path.cwd()
    extra = parse_overrides(overrides or [])
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = exc.problem or exc.context or "invalid YAML"
        raise JobFileError(f"{pos}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise JobFileError(f"{filename}: invalid YAML: {exc}") from None
    specs: list[JobSpec] = []
    for doc in documents:
        if doc is None or (isinstance(doc, yaml.ScalarNode) and doc.value in ("", "~", "null")):
            continue
        specs.extend(_document(builder, doc, base, extra))
    if not specs:
        raise JobFileError(f"{filename}: no jobs in the file (expected job fields, or a `jobs:` list)")
    return specs


def _document(b: _Builder, doc: yaml.Node, base: Path, extra: dict[str, Any]) -> list[JobSpec]:
    fields = b.mapping(doc, "document")
    if "jobs" not in fields:
        return [_job(b, doc, fields, {}, base, extra)]
    allowed = {"jobs", "defaults"}
    for key, (key_node, _) in fields.items():
        if key not in allowed:
            raise b.error(key_node, f"unknown key {key!r} next to `jobs:` (allowed: jobs, defaults; put job fields under defaults:)")
    defaults: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    if "defaults" in fields:
        defaults = b.mapping(fields["defaults"][1], "defaults")
        _check_keys(b, defaults)
    jobs_node = fields["jobs"][1]
    if not isinstance(jobs_node, yaml.SequenceNode):
        raise b.error(jobs_node, f"jobs: expected a list of jobs, got {_kind(jobs_node)}")
    if not jobs_node.value:
        raise b.error(jobs_node, "jobs: the list is empty")
    return [_job(b, item, b.mapping(item, "job"), defaults, base, extra) for item in jobs_node.value]


def _check_keys(b: _Builder, fields: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    for key, (key_node, _) in fields.items():
        if key not in FIELDS:
            raise b.error(key_node, f"unknown key {key!r} (known: {', '.join(FIELDS)})")


def _job(
    b: _Builder, node: yaml.Node, own: dict[str, tuple[yaml.Node, yaml.Node]], defaults: dict, base: Path, extra: dict[str, Any]
) -> JobSpec:
    _check_keys(b, own)
    merged = {**defaults, **own}
    spec = JobSpec(source=b.where(node), servers=list(DEFAULT_SERVERS))
    values: dict[str, Any] = {}
    for key, (_, value_node) in merged.items():
        values[key] = _field(b, key, value_node, base)
    for key, value in extra.items():
        values[key] = _override(key, value, values.get(key))
    _assemble(b, node, spec, values)
    return spec


TEXT_FIELDS = ("name", "command", "args", "script", "script_file", "shell", "queue", "description", "run_at")
PARAMETER_KEYS = ("name", "type", "default", "required", "secret", "description", "choices")


def _field(b: _Builder, key: str, node: yaml.Node, base: Path) -> Any:
    """Validate one field's node; returns the plain value.

    Text fields and env values keep their text as written (``command: true``
    is the command ``true``, ``VERSION: 010`` stays ``010``).
    """
    raw_text = key in TEXT_FIELDS and isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null"
    if key == "parameters":
        return _parameters(b, node)
    try:
        return convert(key, node.value if raw_text else node_value(b, node, raw=key in ("env", "secret_env", "args")), base)
    except ValueError as exc:
        raise b.error(node, f"{key}: {exc}") from None


def _parameters(b: _Builder, node: yaml.Node) -> list[dict[str, Any]]:
    """``parameters:``: a list of mappings (name, type, default, required, secret, description, choices)."""
    if not isinstance(node, yaml.SequenceNode):
        raise b.error(node, f"parameters: expected a list of parameters, got {_kind(node)}")
    out = []
    for item in node.value:
        fields = b.mapping(item, "parameter")
        for key, (key_node, _) in fields.items():
            if key not in PARAMETER_KEYS:
                raise b.error(key_node, f"parameters: unknown key {key!r} (known: {', '.join(PARAMETER_KEYS)})")
        if "name" not in fields:
            raise b.error(item, "parameters: each parameter needs a name")
        param = {}
        for key, (_, value_node) in fields.items():
            if key == "choices":
                param[key] = node_value(b, value_node, raw=True)
            elif isinstance(value_node, yaml.ScalarNode):
                param[key] = b.scalar(value_node)
            else:
                raise b.error(value_node, f"parameters: {key}: expected a plain value, got {_kind(value_node)}")
        out.append(param)
    return out


def node_value(b: _Builder, node: yaml.Node, *, raw: bool = False) -> Any:
    """The plain value of a node; ``raw``: scalars inside lists/mappings keep their text."""

    def item_value(item: yaml.Node) -> Any:
        if raw and item.tag not in ("tag:yaml.org,2002:null",):
            return item.value
        return b.scalar(item)

    if isinstance(node, yaml.ScalarNode):
        return b.scalar(node)
    if isinstance(node, yaml.SequenceNode):
        items = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode):
                raise b.error(item, f"expected a plain value in the list, got {_kind(item)}")
            items.append(item_value(item))
        return items
    out = {}
    for key, (_, value_node) in b.mapping(node, "value").items():
        if not isinstance(value_node, yaml.ScalarNode):
            raise b.error(value_node, f"{key}: expected a plain value, got {_kind(value_node)}")
        out[key] = item_value(value_node)
    return out


def convert(key: str, value: Any, base: Path) -> Any:
    """Check and normalise one field value; ``ValueError`` says what was expected."""
    if key == "description":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if key == "run_at":  # RFC 3339 text; the API checks it (a future time with an offset)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected an RFC 3339 time such as 2026-12-24T03:00:00Z, got {value!r}")
        return value.strip()
    if key in ("name", "command", "script", "shell", "queue"):
        if not isinstance(value, str) or (key != "script" and not value.strip()):
            raise ValueError(f"expected a non-empty string, got {value!r}")
        return value
    if key == "script_file":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a file name, got {value!r}")
        path = (base / value).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if key == "args":
        if isinstance(value, list):
            if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                raise ValueError("expected a string or a list of strings")
            return shlex.join(str(v) for v in value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string or a list of strings, got {value!r}")
    if key == "servers":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise ValueError(f"expected a server name, id or tag:NAME, or a list of them, got {value!r}")
        return [v.strip() for v in items]
    if key in ("priority", "retries"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if key == "priority" and not 1 <= value <= 10:
            raise ValueError(f"expected 1 (highest) to 10 (lowest), got {value}")
        if key == "retries" and not 0 <= value <= 10:
            raise ValueError(f"expected 0 to 10, got {value}")
        return value
    if key == "timeout":
        try:
            return parse_job_timeout(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, got {value!r}") from None
    if key in ("env", "secret_env"):
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of NAME: value, got {value!r}")
        out = {}
        for name, item in value.items():
            problem = job_env_name_problem(str(name))
            if problem:
                raise ValueError(problem)
            if item is None or isinstance(item, (list, dict)):
                raise ValueError(f"{name}: expected a string, got {item!r}")
            out[str(name)] = str(item).lower() if isinstance(item, bool) else str(item)
        return out
    if key == "rollout":
        if not isinstance(value, dict) or not set(value) <= {"concurrency", "max_failures"}:
            raise ValueError(f"expected a mapping with concurrency and/or max_failures, got {value!r}")
        for name, item in value.items():
            if isinstance(item, bool) or not (isinstance(item, int) or (isinstance(item, str) and ROLLOUT_LIMIT.match(item))):
                raise ValueError(f"{name}: expected a number or a percentage like 25%, got {item!r}")
        return dict(value)
    if key == "pty":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    raise ValueError(f"unknown key {key!r}")  # pragma: no cover - keys are checked first


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are YAML scalars (``priority=2`` is a number); ``env.NAME=v`` sets one variable."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise JobFileError(f"--set {pair!r}: expected key=value")
        base_key = key.split(".", 1)[0]
        if base_key == "secret_env":
            raise JobFileError(f"--set {key}: secret values do not go on the command line (others can read it): use --secret-env NAME")
        if base_key not in FIELDS or (base_key == "env") != ("." in key):
            raise JobFileError(f"--set {pair!r}: unknown key {key!r} (known: {', '.join(FIELDS)}, env.NAME)")
        try:
            value = yaml.load(raw, Loader=_Loader) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if key.startswith("env."):
            problem = job_env_name_problem(key[4:])
            if problem:
                raise JobFileError(f"--set {pair!r}: {problem}")
            out.setdefault("env", {})[key[4:]] = raw
            continue
        if key == "servers" and isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        try:
            out[key] = convert(key, value if key not in ("name", "command", "script", "shell", "queue", "args") else raw, Path.cwd())
        except ValueError as exc:
            raise JobFileError(f"--set {pair!r}: {exc}") from None
    return out


def _override(key: str, value: Any, current: Any) -> Any:
    if key in ("env", "secret_env"):
        return {**(current or {}), **value}
    return value


def _assemble(b: _Builder, node: yaml.Node, spec: JobSpec, values: dict[str, Any]) -> None:
    script = values.pop("script", None)
    script_file = values.pop("script_file", None)
    command = values.pop("command", None)
    given = [k for k, v in (("command", command), ("script", script), ("script_file", script_file)) if v is not None]
    if len(given) != 1:
        what = "none of them" if not given else " and ".join(given)
        raise b.error(node, f"a job needs exactly one of command, script or script_file (got {what})")
    if command is not None:
        spec.command = command
        if values.get("shell"):
            raise b.error(node, "shell: only for script jobs (command jobs run in the login shell)")
    else:
        spec.script = script if script is not None else script_file
    for key, value in values.items():
        setattr(spec, key, value)


def dump_template(template: dict[str, Any]) -> str:
    """A template (as the API shows it) as a one-job YAML job file, to edit and load again."""
    keys = ("name", "description", "command", "args", "script", "shell", "servers", "priority", "timeout", "retries", "env", "rollout")
    data = {k: template[k] for k in keys if template.get(k) not in (None, "", [], {})}
    if "script" in data:
        data.pop("command", None)
    if template.get("secret_env"):
        data["secret_env"] = {name: "***" for name in template["secret_env"]}  # never shown; "***" keeps the stored value
    params = [{k: v for k, v in p.items() if v not in (None, "", False) or k == "name"} for p in template.get("parameters") or []]
    if params:
        data["parameters"] = params
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_data(text: str) -> Any:
    """Plain data (safe YAML types) of one YAML document, for YAML formats other than job files.

    Ansible inventories are read through here so that ``yaml`` stays in this
    module.  A syntax error is a ``ValueError`` whose message starts with
    ``line N:`` (1-based).
    """
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else "line ?"
        raise ValueError(f"{where}: {exc.problem or exc.context or 'invalid YAML'}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"line ?: invalid YAML ({type(exc).__name__})") from None
