"""The seed's environment conventions: a ``.env`` file in the working directory and ``POSTGRES_*`` variables.

Imports nothing of ours but errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from remora.errors import ConfigError

DOTENV_FILE = ".env"
# The seed's PostgreSQL settings: they make database.url when DATABASE_URL is not set.
POSTGRES_ENV = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_SSLMODE")
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def postgres_url(values: Mapping[str, str]) -> str:
    """``POSTGRES_HOST/PORT/DB/USER/PASSWORD/SSLMODE`` -> a postgres:// URL (user and password percent-encoded)."""
    from urllib.parse import quote

    user, password = values.get("POSTGRES_USER", ""), values.get("POSTGRES_PASSWORD", "")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@" if user else ""
    host = values.get("POSTGRES_HOST", "") or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = values.get("POSTGRES_PORT", "") or "5432"
    url = f"postgres://{auth}{host}:{port}/{quote(values.get('POSTGRES_DB', '') or 'postgres', safe='')}"
    if values.get("POSTGRES_SSLMODE"):
        url += "?sslmode=" + quote(values["POSTGRES_SSLMODE"], safe="")
    return url


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a .env file: ``#`` comments, optional ``export``, single or double quotes.

    Double-quoted values understand ``\\n``, ``\\"`` and ``\\\\``; single-quoted ones are literal;
    unquoted ones end at `` #``.  A line that is not an assignment is an error naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DOTENV_LINE.match(line)
        if not m:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE", details={"file": str(path), "line": number})
        key, raw = m.groups()
        if raw[:1] in ("'", '"'):
            value, rest = _quoted(raw)
            if value is None or (rest.strip() and not rest.strip().startswith("#")):
                raise ConfigError(f"{path}:{number}: unterminated or malformed quoted value", details={"file": str(path), "line": number})
        else:
            value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
        out[key] = value
    return out


def _quoted(raw: str) -> tuple[str | None, str]:
    """A quoted .env value and what follows its closing quote; (None, "") when it is not closed."""
    quote_char, i = raw[0], 1
    out: list[str] = []
    while i < len(raw):
        ch = raw[i]
        if ch == quote_char:
            return "".join(out), raw[i + 1 :]
        if quote_char == '"' and ch == "\\" and i + 1 < len(raw) and raw[i + 1] in '\\"n':
            out.append("\n" if raw[i + 1] == "n" else raw[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return None, ""
