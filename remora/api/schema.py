"""A small JSON Schema (2020-12 subset) validator for request bodies.

The same schemas are published in the OpenAPI document, so what the API
accepts and what it documents cannot drift.  Supported keywords: ``type``
(a name or a list), ``properties``, ``required``, ``additionalProperties``
(``false`` or a schema), ``items``, ``minItems``, ``maxItems``, ``minimum``,
``maximum``, ``minLength``, ``maxLength``, ``enum``, ``pattern``.  Errors are
collected per field (``{"priority": "must be between 1 and 10"}``).
"""

from __future__ import annotations

import re
from typing import Any

from remora.errors import ValidationError

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    if name == "null":
        return value is None
    raise ValueError(f"unknown schema type {name}")


def _range_message(schema: dict[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}"
    if lo is not None:
        return f"must be at least {lo}"
    return f"must be at most {hi}"


def _check(schema: dict[str, Any], value: Any, path: str, errors: dict[str, str]) -> Any:
    """Validate ``value``; return it normalised (integral floats become ints)."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        matched = next((n for n in names if _is_type(value, n)), None)
        if matched is None:
            errors[path or "body"] = "must be " + " or ".join(_TYPE_NAMES[n] for n in names)
            return value
        if matched == "integer" and isinstance(value, float):
            value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        # null (an omitted optional value) is not a choice to offer in the message
        errors[path or "body"] = "must be one of " + ", ".join(str(v) for v in schema["enum"] if v is not None)
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if ("minimum" in schema and value < schema["minimum"]) or ("maximum" in schema and value > schema["maximum"]):
            errors[path or "body"] = _range_message(schema)
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors[path or "body"] = (
                "must not be empty" if schema["minLength"] == 1 else f"must be at least {schema['minLength']} characters"
            )
        elif "maxLength" in schema and len(value) > schema["maxLength"]:
            errors[path or "body"] = f"must be at most {schema['maxLength']} characters"
        elif "pattern" in schema and not re.search(schema["pattern"], value):
            errors[path or "body"] = f"must match {schema['pattern']}"
    elif isinstance(value, list):
        return _check_array(schema, value, path, errors)
    elif isinstance(value, dict):
        return _check_object(schema, value, path, errors)
    return value


def _check_array(schema: dict[str, Any], value: list[Any], path: str, errors: dict[str, str]) -> list[Any]:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors[path or "body"] = f"must have at least {schema['minItems']} item(s)"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors[path or "body"] = f"must have at most {schema['maxItems']} items"
        return value
    items = schema.get("items")
    if items is None:
        return value
    return [_check(items, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]


def _check_object(schema: dict[str, Any], value: dict[str, Any], path: str, errors: dict[str, str]) -> dict[str, Any]:
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    out = {}
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if key in props:
            out[key] = _check(props[key], item, sub, errors)
        elif extra is False:
            errors[sub] = "unknown field"
        elif isinstance(extra, dict):
            out[key] = _check(extra, item, sub, errors)
        else:
            out[key] = item
    for key in schema.get("required", []):
        if key not in value:
            errors[f"{path}.{key}" if path else key] = "is required"
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors[path or "body"] = f"must have at most {schema['maxProperties']} entries"
    return out


def validate(schema: dict[str, Any], value: Any) -> Any:
    """``value`` checked against ``schema`` (normalised); ValidationError naming every bad field."""
    errors: dict[str, str] = {}
    result = _check(schema, value, "", errors)
    if errors:
        first = next(iter(errors.items()))
        raise ValidationError(f"invalid request: {first[0]} {first[1]}", details=errors)
    return result


# -- shared building blocks ---------------------------------------------------

UUID = {"type": "string", "format": "uuid"}
NULLABLE_STR = {"type": ["string", "null"]}
TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}


def obj(properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}
