"""``remora templates``: list, show, create, edit, delete, push and run saved job templates."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from remora.cli.common import parse_kv, print_json
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, out
from remora.cli.submit import finish
from remora.errors import Conflict, ValidationError

templates_app = typer.Typer(
    help="Saved job templates with typed parameters: list, show, create, edit, delete, push, run.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Template name.", show_default=False)]
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="YAML job file (see remora-jobfile(5)); '-' reads stdin.")]


def _bodies(path: Path) -> list[dict[str, Any]]:
    from remora import jobfile

    specs = jobfile.load_file(path)
    for spec in specs:
        if not spec.name:
            raise ValidationError(f"{spec.source}: a template needs a name (name: ...)")
    return [spec.template_body() for spec in specs]


@templates_app.command("list")
def list_templates(as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """List the saved templates.

    Example: remora templates list
    """
    rows = make_client(api_url, token).list_templates()
    if as_json:
        print_json(rows)
        return
    if not rows:
        err("no templates")
        return
    from rich.markup import escape
    from rich.table import Table

    from remora.cli.common import console

    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "PARAMETERS", "SERVERS", "DESCRIPTION"):
        table.add_column(column, no_wrap=column != "DESCRIPTION")
    for row in rows:
        names = " ".join(p["name"] + ("*" if p.get("required") else "") for p in row.get("parameters") or [])
        table.add_row(escape(row["name"]), escape(names), escape(", ".join(row.get("servers") or [])), escape(row.get("description") or ""))
    console().print(table)


@templates_app.command("show")
def show(name: NameArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Show a template: what it runs, where, and its parameters.

    Example: remora templates show restart-service
    """
    row = make_client(api_url, token).get_template(name)
    if as_json:
        print_json(row)
        return
    from rich.markup import escape

    lines = [f"template [bold]{escape(row['name'])}[/]" + (f": {escape(row['description'])}" if row.get("description") else "")]
    if row.get("script") is not None:
        lines.append(f"  script ({escape(row.get('shell') or 'default shell')}):")
        lines.extend(f"    {escape(line)}" for line in str(row["script"]).rstrip("\n").splitlines())
    else:
        lines.append(f"  command  {escape((row['command'] + ' ' + (row.get('args') or '')).strip())}")
    lines.append(f"  servers  {escape(', '.join(row.get('servers') or []) or '(give them when running)')}")
    for param in row.get("parameters") or []:
        extra = [param["type"]]
        if param.get("choices"):
            extra.append("one of " + "|".join(param["choices"]))
        if param.get("required"):
            extra.append("required")
        if param.get("secret"):
            extra.append("secret")
        if param.get("default") is not None:
            extra.append(f"default {param['default']}")
        desc = f"  {param['description']}" if param.get("description") else ""
        lines.append(f"  param    {escape(param['name'])} ({escape(', '.join(str(e) for e in extra))}){escape(desc)}")
    out("\n".join(lines))


@templates_app.command("create")
def create(file: FileOpt, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Save each job of a job file as a new template (a name that exists is an error).

    Example: remora templates create -f restart.yaml
    """
    client = make_client(api_url, token)
    for body in _bodies(file):
        client.create_template(body)
        out(f"[green]✓[/] template [bold]{body['name']}[/] created")


@templates_app.command("push")
def push(file: FileOpt, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Save each job of a job file as a template: created, or replaced when it exists.

    Example: remora templates push -f jobs.yaml
    """
    client = make_client(api_url, token)
    for body in _bodies(file):
        try:
            client.create_template(body)
            out(f"[green]✓[/] template [bold]{body['name']}[/] created")
        except Conflict:
            client.update_template(body["name"], body)
            out(f"[green]✓[/] template [bold]{body['name']}[/] updated")


@templates_app.command("edit")
def edit(
    name: NameArg,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Replace the definition with this job file's one job.")] = None,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Replace a template's definition: from a job file, or edited in $EDITOR.

    Secret values are never shown: the editor has "***" in their place, which keeps
    the stored value; write a new value to replace it, remove the line to drop it.

    Example: remora templates edit restart-service -f restart.yaml
    """
    from remora import jobfile

    client = make_client(api_url, token)
    if file is None:
        current = client.get_template(name)
        with tempfile.TemporaryDirectory() as where:
            path = Path(where) / f"{name}.yaml"
            path.write_text(jobfile.dump_template(current), encoding="utf-8")
            editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
            if subprocess.call([*editor.split(), str(path)]) != 0:
                raise ValidationError(f"{editor} failed: the template is unchanged")
            bodies = _bodies(path)
    else:
        bodies = _bodies(file)
    if len(bodies) != 1:
        raise ValidationError(f"expected one job in the file, found {len(bodies)}")
    row = client.update_template(name, bodies[0])
    out(f"[green]✓[/] template [bold]{row['name']}[/] updated")


@templates_app.command("delete")
def delete(name: NameArg, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a template (jobs run from it keep their record).

    Example: remora templates delete restart-service
    """
    make_client(api_url, token).delete_template(name)
    out(f"[green]✓[/] template [bold]{name}[/] deleted")


@templates_app.command("run")
def run(
    name: NameArg,
    set_: Annotated[list[str] | None, typer.Option("--set", help="A parameter: NAME=VALUE (repeatable).")] = None,
    server: Annotated[
        list[str] | None, typer.Option("--server", "-s", help="Run here (name, id or tag:T; repeatable) instead of the template's servers.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Block until the job(s) finish, print their output; exit with their code.")
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream output live (implies --wait).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a template with parameters (each is quoted for the shell and exported as REMORA_PARAM_<NAME>).

    Values are text; the API checks them against the parameter's type (int, bool, choice).

    Example: remora templates run restart-service --set service=nginx --wait
    """
    client = make_client(api_url, token)
    jobs = client.run_template(name, parse_kv(set_, "--set"), list(server or []) or None)
    finish(client, jobs, wait=wait, follow=follow, as_json=as_json, quiet=False)


def register(app: typer.Typer) -> None:
    app.add_typer(templates_app, name="templates")
