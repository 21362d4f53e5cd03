"""What every command shares: global options, settings, consoles, output helpers.

Heavy modules (peewee, paramiko, waitress) are imported inside the commands
that need them, never here, so ``remora --help`` and the HTTP client
commands start fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import typer

from remora import config as config_mod
from remora.errors import ValidationError


@dataclass
class State:
    config_path: str | None = None
    verbosity: int = 0
    log_format: str | None = None
    debug: bool = False
    _settings: config_mod.Settings | None = field(default=None, repr=False)

    def settings(self, overrides: dict[str, Any] | None = None) -> config_mod.Settings:
        """Effective settings: file < env < global flags < this command's flags."""
        if self._settings is None:
            self._settings = config_mod.load(self.config_path, os.environ, self.flags())
        if overrides:
            return config_mod.with_overrides(self._settings, overrides)
        return self._settings

    def flags(self) -> dict[str, Any]:
        """The global flags as settings (``section.key`` -> value; None: not given)."""
        flags: dict[str, Any] = {"logging.format": self.log_format}
        if self.debug or self.verbosity > 0:
            flags["logging.level"] = "debug"
        elif self.verbosity < 0:
            flags["logging.level"] = "warning"
        return flags

    def setup_logging(self, settings: config_mod.Settings) -> None:
        from remora.logs import setup_logging

        setup_logging(settings.logging.level, settings.logging.format)


STATE = State()


def state(ctx: typer.Context | None = None) -> State:
    return STATE


def console(stderr: bool = False) -> Any:
    """A rich Console: colours only on a terminal (and never with NO_COLOR)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")), highlight=False, emoji=False, soft_wrap=not stream.isatty())


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def say(message: str, *, stderr: bool = False) -> None:
    """One line of rich markup: styled on a terminal; elsewhere (a pipe, a file, a CI log) its plain text.

    Off a terminal a Console prints no styles anyway, and the plain text costs a tenth of a
    Console's print (a fan-out's summary prints a line per host).  FORCE_COLOR keeps the Console."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("FORCE_COLOR"):
        console(stderr=stderr).print(message)
        return
    stream.write(plain_text(message) + "\n")
    stream.flush()


_MARKUP_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")  # rich.markup's tag, with the backslashes before it


def plain_text(markup: str) -> str:
    """The text rich markup shows, without importing rich (a fifth of a client command's start-up).

    rich.markup's grammar: a tag goes; a backslash before it makes it literal text; pairs of
    backslashes before a tag are literal backslashes."""
    if "[" not in markup:
        return markup

    def piece(match: re.Match[str]) -> str:
        escapes = match.group(1)
        backslashes, escaped = divmod(len(escapes), 2)
        return "\\" * backslashes + (match.group(0)[len(escapes) :] if escaped else "")

    return _MARKUP_TAG.sub(piece, markup)


def info(message: str) -> None:
    """A message for the person at the terminal (stderr, so stdout stays data)."""
    say(message, stderr=True)


def parse_kv(pairs: list[str] | None, what: str = "-e") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"{what} {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


CREATE_DATABASE_HINT = (
    "Create it with `remora db upgrade` (or by starting `remora up` or `remora api` once), "
    "or point database.url (REMORA_DATABASE_URL) at the existing one."
)


def open_database(
    settings: config_mod.Settings, *, new: bool = False, upgrade: bool = True, data_dir: bool = False, hint: str = ""
) -> None:
    """Bind the models to the configured database (its schema upgraded when older, unless ``upgrade`` is False).

    ``new``: only for the commands whose job is to make the database (``up``,
    ``api``, ``db upgrade``).  Every other command needs an existing one: when
    there is none it stops with a ConfigError naming where it looked and how to
    create it, and creates nothing.  ``data_dir``: also make the data directory
    (0700) -- for the processes that keep files there.
    """
    from remora import models
    from remora.errors import ConfigError, DatabaseMissing

    try:
        models.init_db(
            settings.database_url,
            busy_timeout=settings.database.busy_timeout,
            pool_size=settings.database.pool_size,
            create=upgrade,
            new=new,
            data_dir=settings.data_dir if data_dir else None,
        )
    except DatabaseMissing as exc:
        raise ConfigError(" ".join(part for part in (f"{exc.message}.", CREATE_DATABASE_HINT, hint) if part)) from None


def start_time(at: str | None, in_: str | None) -> str | None:
    """``--at`` (RFC 3339, e.g. 2026-12-24T03:00Z; a time without an offset is local) or ``--in`` (10m, 2h) -> RFC 3339 UTC for ``run_at``."""
    import datetime as dt

    from remora.units import parse_duration

    if at and in_:
        raise ValidationError("give --at or --in, not both")
    if in_:
        try:
            seconds = parse_duration(in_)
        except ValueError as exc:
            raise ValidationError(f"--in {in_!r}: expected {exc}") from None
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    elif at:
        text = at.strip()
        text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(f"--at {at!r}: expected a time such as 2026-12-24T03:00Z or '2026-12-24 03:00'") from None
        if when.tzinfo is None:
            when = when.astimezone()  # the local time of this machine
    else:
        return None
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
