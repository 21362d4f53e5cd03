"""API token use-cases for the REST API, the CLI and ``remora up`` (the token store itself is ``remora.auth``)."""

from __future__ import annotations

import datetime as dt

from remora import auth, models
from remora.errors import ValidationError
from remora.models import ApiToken
from remora.units import parse_duration


def create_token(name: str, role: str, expires: float | dt.timedelta | None = None) -> tuple[ApiToken, str]:
    """Create an API token; returns (row, plaintext). The plaintext is never stored: show it once."""
    return auth.create_token(name, role, expires)


def issue_token(name: str, role: str, expires: float | dt.timedelta | None = None) -> tuple[dict[str, object], str]:
    """Create an API token; returns (what people may see of it, plaintext)."""
    row, plaintext = auth.create_token(name, role, expires)
    return auth.token_info(row), plaintext


def parse_lifetime(value: object, field: str = "expires_in") -> float | None:
    """A token's lifetime: seconds (a positive number) or a duration such as ``30d`` / ``12h``; None: never expires."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError(f"{field}: expected seconds or a duration such as 30d", details={field: "seconds or a duration such as 30d"})
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValidationError(f"{field} {value!r}: expected {exc}", details={field: "seconds or a duration such as 30d"}) from None
    if not 0 < seconds <= auth.MAX_LIFETIME:
        raise ValidationError(f"{field} must be positive and at most 100 years", details={field: "must be positive, at most 100 years"})
    return seconds


def list_tokens() -> list[dict[str, object]]:
    """Every token as people may see it (never its hash), oldest first."""
    return [auth.token_info(row) for row in auth.list_tokens()]


def revoke_token(name_or_id: str) -> dict[str, object]:
    """Revoke a token by name or id (NotFound otherwise); it stops working at once in this process."""
    return auth.token_info(auth.revoke_token(name_or_id))


def token_is_valid(plaintext: str) -> bool:
    """Whether ``plaintext`` is a stored token that is neither revoked nor expired."""
    row = ApiToken.get_or_none(ApiToken.token_hash == auth.hash_token(plaintext))
    return row is not None and not row.revoked and (row.expires_at is None or row.expires_at > models.utcnow())


def unused_token_name(name: str) -> str:
    """``name``, or ``name-<UTC timestamp>`` when a token of that name exists."""
    if ApiToken.select().where(ApiToken.name == name).exists():
        return f"{name}-{models.utcnow():%Y%m%d%H%M%S}"
    return name
