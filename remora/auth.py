"""API tokens and roles.

A token is 32 random bytes (``rmr_`` + URL-safe base64), shown once when it
is created; only its SHA-256 is stored (``ApiToken.token_hash``), with a short
prefix so a person can tell tokens apart in ``remora token list``.  Roles are
ordered: ``viewer`` (read only) < ``runner`` (read, and run saved templates:
no free-form commands or scripts) < ``operator`` (submit, cancel, rerun, test
servers, create and edit templates) < ``admin`` (everything, including
servers, keys, tokens, audit).  A route names the weakest role it allows.

``Authenticator`` checks ``Authorization: Bearer`` headers; it caches a
token's identity for a few seconds (so a busy API does not query the token
table on every request) and forgets it at once on revoke in this process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from remora import models
from remora.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from remora.models import ApiToken, Role

TOKEN_PREFIX = "rmr_"
ROLE_RANK = {Role.VIEWER.value: 1, Role.RUNNER.value: 2, Role.OPERATOR.value: 3, Role.ADMIN.value: 4}
MAX_LIFETIME = 100 * 365 * 86400.0  # seconds: the longest expiry a token may be given (none: never expires)
CACHE_SECONDS = 5.0
LAST_USED_EVERY = 60.0  # seconds between writes of ApiToken.last_used_at


@dataclass(frozen=True)
class Identity:
    """Who made a request: the token's name and role."""

    name: str
    role: str
    token_id: str | None = None

    def allows(self, required: str | None) -> bool:
        return required is None or ROLE_RANK.get(self.role, 0) >= ROLE_RANK[required]


ANONYMOUS_ADMIN = Identity(name="anonymous", role=Role.ADMIN.value)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_role(role: str) -> str:
    value = str(role).strip().lower()
    if value not in ROLE_RANK:
        raise ValidationError(
            f"unknown role {role!r} (use admin, operator, runner or viewer)", details={"role": "must be admin, operator, runner or viewer"}
        )
    return value


def create_token(name: str, role: str, expires: float | dt.timedelta | None = None) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plaintext (shown once, never stored).

    ``expires``: seconds (or a timedelta) from now; ``None`` never expires.
    """
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationError("token name must be 1..128 characters", details={"name": "must be 1..128 characters"})
    if "/" in name or not name.isprintable():
        # a name is also how a token is revoked: DELETE /api/v1/tokens/<name>
        raise ValidationError("token name must not contain '/' or control characters", details={"name": "no '/' or control characters"})
    role = parse_role(role)
    expires_at = None
    if expires is not None:
        seconds = expires.total_seconds() if isinstance(expires, dt.timedelta) else float(expires)
        if not 0 < seconds <= MAX_LIFETIME:  # also refuses NaN and infinity
            raise ValidationError(
                "expiry must be in the future and at most 100 years away", details={"expires": "must be positive, at most 100 years"}
            )
        expires_at = models.utcnow() + dt.timedelta(seconds=seconds)
    plaintext = generate_token()
    try:
        with models.write_transaction():
            if ApiToken.select().where(ApiToken.name == name).exists():
                raise Conflict(f"a token named {name!r} exists")
            row = ApiToken.create(
                name=name, token_hash=hash_token(plaintext), prefix=plaintext[: len(TOKEN_PREFIX) + 4], role=role, expires_at=expires_at
            )
    except models.IntegrityError:
        raise Conflict(f"a token named {name!r} exists") from None
    return row, plaintext


def list_tokens() -> list[ApiToken]:
    return list(ApiToken.select().order_by(ApiToken.created_at))


def revoke_token(name_or_id: str) -> ApiToken:
    row = ApiToken.get_or_none((ApiToken.name == name_or_id) | (ApiToken.id == name_or_id))
    if row is None:
        raise NotFound(f"no token named {name_or_id!r}")
    ApiToken.update(revoked=True).where(ApiToken.id == row.id).execute()
    row.revoked = True
    _invalidate_all()
    return row


_AUTHENTICATORS: list[Authenticator] = []


def _invalidate_all() -> None:
    for authenticator in list(_AUTHENTICATORS):
        authenticator.invalidate()


def token_info(row: ApiToken) -> dict[str, object]:
    """A token as shown to people (never its hash)."""
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "prefix": row.prefix,
        "created_at": models.to_rfc3339(row.created_at),
        "expires_at": models.to_rfc3339(row.expires_at),
        "last_used_at": models.to_rfc3339(row.last_used_at),
        "revoked": bool(row.revoked),
    }


class Authenticator:
    """Turns an ``Authorization`` header into an Identity (or raises Unauthorized)."""

    def __init__(self, *, enabled: bool = True, cache_seconds: float = CACHE_SECONDS) -> None:
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Identity | None, dt.datetime | None]] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()
        _AUTHENTICATORS.append(self)

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        if self in _AUTHENTICATORS:
            _AUTHENTICATORS.remove(self)

    def authenticate(self, header: str | None) -> Identity:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not header:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        digest = hash_token(token)
        identity, expires_at = self._lookup(digest)
        if identity is None:
            raise Unauthorized("invalid or revoked token")
        if expires_at is not None and expires_at <= models.utcnow():
            raise Unauthorized("token expired")
        self._touch(identity)
        return identity

    def _lookup(self, digest: str) -> tuple[Identity | None, dt.datetime | None]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit[0] > now:
            return hit[1], hit[2]
        row = ApiToken.get_or_none(ApiToken.token_hash == digest)
        identity = None
        expires_at = None
        if row is not None and not row.revoked and hmac.compare_digest(row.token_hash, digest):
            identity = Identity(name=row.name, role=row.role, token_id=row.id)
            expires_at = row.expires_at
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_seconds, identity, expires_at)
        return identity, expires_at

    def _touch(self, identity: Identity) -> None:
        if identity.token_id is None:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last_used.get(identity.token_id, -1e9) < LAST_USED_EVERY:
                return
            self._last_used[identity.token_id] = now
        try:
            ApiToken.update(last_used_at=models.utcnow()).where(ApiToken.id == identity.token_id).execute()
        except models.DatabaseError:
            pass  # best effort: a busy database must not fail the request

    @staticmethod
    def authorize(identity: Identity, required: str | None) -> None:
        if not identity.allows(required):
            raise Forbidden(f"role {identity.role} may not do this (needs {required})", details={"required_role": required})
