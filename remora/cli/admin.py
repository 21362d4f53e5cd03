"""``remora config`` and ``remora db``: configuration files and the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from remora.cli.common import STATE, console, info, print_json

config_app = typer.Typer(help="Write and inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema: create and upgrade.", no_args_is_help=True)


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.")] = Path("remora.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented config file with every key at its default.

    Example: remora config init ~/.config/remora/config.toml
    """
    from remora.config import render_toml
    from remora.errors import Conflict

    if path.exists() and not force:
        raise Conflict(f"{path} exists; use --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_toml(), encoding="utf-8")
    info(f"wrote {path}")


@config_app.command("show")
def config_show(
    sources: Annotated[bool, typer.Option("--sources", help="Show where each value came from.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective configuration (secrets masked).

    Example: remora config show --sources
    """
    from remora.config import mask

    settings = STATE.settings()
    if as_json:
        data: dict = {"config_file": settings.config_file, "dotenv_file": settings.dotenv_file, "settings": settings.masked()}
        if sources:
            data["sources"] = dict(settings.sources)
        print_json(data)
        return
    from rich.table import Table

    dotenv = f"; .env: {settings.dotenv_file}" if settings.dotenv_file else ""
    table = Table(title=f"config file: {settings.config_file or '(none)'}{dotenv}", show_lines=False)
    table.add_column("key")
    table.add_column("value")
    if sources:
        table.add_column("source")
    for dotted, value in settings.items():
        row = [dotted, repr(mask(dotted, value)) if isinstance(value, str) else str(mask(dotted, value))]
        if sources:
            row.append(settings.sources.get(dotted, "default"))
        table.add_row(*row)
    console().print(table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database when there is none (the SQLite file, or the tables in PostgreSQL) and apply schema migrations (never drops data).

    Example: remora db upgrade
    """
    from remora import models

    settings = STATE.settings()
    STATE.setup_logging(settings)
    database = models.init_db(settings.database_url, busy_timeout=settings.database.busy_timeout, create=False)
    with database.connection_context():
        version = models.ensure_schema(database)
    info(f"database at schema version {version}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.add_typer(db_app, name="db")
