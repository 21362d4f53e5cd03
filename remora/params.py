"""Typed template parameters and their one safe way into a shell command.

Shared by the API (``remora.services.templates``) and the CLI (``remora run -f`` of a job file
that declares ``parameters:``), so a value is checked and quoted the same way everywhere:

- ``{{ name }}`` in a command, its arguments or a script becomes the value quoted for a POSIX
  shell (``shlex.quote``): one word, read literally, whatever it contains;
- every parameter is also exported as ``REMORA_PARAM_<NAME>`` (upper case); a ``secret``
  parameter only so, as a secret variable, and a ``{{ }}`` of a secret parameter is refused
  (it would put the value in the job's command in clear).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from remora.errors import ValidationError
from remora.masking import MIN_SECRET_BYTES

MASK = "***"
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
TYPES = ("string", "int", "bool", "choice")
MAX_STRING = 65536
MAX_PARAMETERS = 100
ENV_PREFIX = "REMORA_PARAM_"
TEXT_FIELDS = ("command", "args", "script")


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"invalid template: {field} {message}", details={field: message})


def _param_error(name: str, message: str) -> ValidationError:
    return ValidationError(f"parameter {name!r} {message}", details={"params": {name: message}, "parameter": name})


def coerce(param: dict[str, Any], value: Any) -> str:
    """A parameter's value as text (what is quoted and exported); raises ValidationError naming it."""
    name, kind = param["name"], param["type"]
    if kind == "int":
        if isinstance(value, bool) or isinstance(value, float):
            raise _param_error(name, "must be an integer")
        if isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[+-]?[0-9]{1,18}", text):
                raise _param_error(name, "must be an integer")
            value = int(text)
        if not isinstance(value, int):
            raise _param_error(name, "must be an integer")
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
        raise _param_error(name, "must be true or false")
    if not isinstance(value, str):
        raise _param_error(name, "must be a string")
    if "\0" in value or len(value) > MAX_STRING:
        raise _param_error(name, f"must be at most {MAX_STRING} characters, without NUL")
    if kind == "choice" and value not in param["choices"]:
        raise _param_error(name, "must be one of " + ", ".join(param["choices"]))
    if param.get("secret") and len(value.encode()) < MIN_SECRET_BYTES:
        raise _param_error(name, f"is secret: its value needs at least {MIN_SECRET_BYTES} bytes (it is masked in output)")
    return value


def check_parameters(raw: Any) -> list[dict[str, Any]]:
    """The template's parameters, normalised; a ValidationError names the first bad one."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_PARAMETERS:
        raise _fail("parameters", f"must be a list of at most {MAX_PARAMETERS} parameters")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise _fail("parameters", "each parameter must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not PARAM_NAME_RE.match(name):
            raise _fail("parameters", f"name {name!r} must be a letter or _ then letters, digits or _ (at most 64)")
        if name.upper() in seen:
            raise _fail("parameters", f"{name!r} is declared twice")
        seen.add(name.upper())
        unknown = sorted(set(item) - {"name", "type", "default", "required", "secret", "description", "choices"})
        if unknown:
            raise _fail("parameters", f"{name!r} has unknown field(s): {', '.join(unknown)}")
        kind = item.get("type", "string")
        if kind not in TYPES:
            raise _fail("parameters", f"{name!r} has type {kind!r}: use one of {', '.join(TYPES)}")
        param: dict[str, Any] = {
            "name": name,
            "type": kind,
            "required": bool(item.get("required", False)),
            "secret": bool(item.get("secret", False)),
            "description": str(item.get("description") or ""),
        }
        for flag in ("required", "secret"):
            if not isinstance(item.get(flag, False), bool):
                raise _fail("parameters", f"{name!r}: {flag} must be true or false")
        if kind == "choice":
            choices = item.get("choices")
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
                raise _fail("parameters", f"{name!r} is a choice: give choices, a list of non-empty strings")
            param["choices"] = list(dict.fromkeys(choices))
        elif "choices" in item:
            raise _fail("parameters", f"{name!r}: only a choice parameter has choices")
        if item.get("default") is not None:
            if param["secret"]:
                raise _fail("parameters", f"{name!r} is secret: it cannot have a default (it would be stored in clear)")
            try:
                coerce(param, item["default"])
            except ValidationError as exc:
                raise _fail("parameters", f"{name!r}: default {item['default']!r} {exc.details['params'][name]}") from None
            param["default"] = item["default"]
        else:
            param["default"] = None
        out.append(param)
    return out


def placeholders(text: str | None) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER_RE.finditer(text or "")]


def check_placeholders(data: dict[str, Any], params: list[dict[str, Any]]) -> None:
    by_name = {p["name"]: p for p in params}
    for field in TEXT_FIELDS:
        for ref in placeholders(data.get(field)):
            param = by_name.get(ref)
            if param is None:
                raise _fail(field, f"names {{{{ {ref} }}}}, which is not a declared parameter")
            if param["secret"]:
                raise _fail(
                    field,
                    f"uses {{{{ {ref} }}}}, a secret parameter: it would be stored in the job's {field} in clear; "
                    f"use ${ENV_PREFIX}{ref.upper()} instead",
                )


def bind(params: list[dict[str, Any]], given: dict[str, Any] | None) -> dict[str, str]:
    """Each declared parameter's value as text (given, else its default); 400 naming a missing/bad/unknown one."""
    given = dict(given or {})
    declared = {p["name"] for p in params}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise ValidationError(
            f"unknown parameter(s): {', '.join(unknown)}",
            details={"params": {n: "is not a parameter of this template" for n in unknown}, "parameter": unknown[0]},
        )
    values: dict[str, str] = {}
    for param in params:
        name = param["name"]
        value = given.get(name, param.get("default"))
        if value is None:
            if param["required"]:
                raise _param_error(name, "is required")
            values[name] = "false" if param["type"] == "bool" else ""  # an optional parameter left out
            continue
        values[name] = coerce(param, value)
    return values


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with every ``{{ name }}`` replaced by the shell-quoted value: always one literal word."""
    return PLACEHOLDER_RE.sub(lambda m: shlex.quote(values[m.group(1)]), text)


def export(params: list[dict[str, Any]], values: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The ``REMORA_PARAM_<NAME>`` variables of bound ``values``: (plain env, secret env); optional secrets left out are absent."""
    env: dict[str, str] = {}
    secret: dict[str, str] = {}
    for param in params:
        name = param["name"]
        if param.get("secret"):
            if values.get(name):
                secret[ENV_PREFIX + name.upper()] = values[name]
        else:
            env[ENV_PREFIX + name.upper()] = values.get(name, "")
    return env, secret


def recorded(params: list[dict[str, Any]], values: dict[str, str]) -> dict[str, str]:
    """The parameters as a job records them: secret ones ``***``."""
    secret = {p["name"] for p in params if p.get("secret")}
    return {name: (MASK if name in secret else value) for name, value in values.items()}
