"""``remora servers`` and ``remora keys``: the hosts jobs run on and their keys.

Secrets never come from plain flags (they would land in shell history and
``ps``): passwords and passphrases are read from stdin, keys from files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from remora.cli.common import print_json
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, fmt_time, out
from remora.errors import ExitCode, ValidationError

servers_app = typer.Typer(help="Manage the servers jobs run on.", no_args_is_help=True)
keys_app = typer.Typer(help="Upload, list and remove PEM private keys.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Server name (or id).", show_default=False)]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the SSH password from stdin (first line).")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="Private key file to log in with (stored encrypted).")]
PassphraseStdin = Annotated[bool, typer.Option("--passphrase-stdin", help="Read the key's passphrase from stdin (first line).")]
PemOpt = Annotated[str | None, typer.Option("--pem", help="Name of an uploaded PEM key (see `remora keys list`).")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable); submit --tag T targets every server with it.")]
MaxJobsOpt = Annotated[int | None, typer.Option("--max-jobs", min=0, help="Most jobs at once on this server (0: no limit).")]
JumpOpt = Annotated[
    str | None, typer.Option("--jump", help="Connect through this server (name or id; ProxyJump). It may have a jump server too.")
]
PolicyOpt = Annotated[
    str | None, typer.Option("--host-key-policy", help="accept-new, strict or off (default: config ssh.host_key_policy).")
]


def read_secret_line(what: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{what}: ")
    line = sys.stdin.readline()
    secret = line.rstrip("\r\n")
    if not secret:
        raise ValidationError(f"no {what} on stdin")
    return secret


def credentials(password_stdin: bool, key_file: Path | None, passphrase_stdin: bool, pem: str | None, *, required: bool) -> dict[str, Any]:
    """The auth part of a server body, from exactly one of the credential options."""
    chosen = [name for name, on in (("--password-stdin", password_stdin), ("--key-file", key_file), ("--pem", pem)) if on]
    if len(chosen) > 1:
        raise ValidationError(f"choose one of --password-stdin, --key-file, --pem (got {' and '.join(chosen)})")
    if passphrase_stdin and not key_file:
        raise ValidationError("--passphrase-stdin goes with --key-file")
    if not chosen:
        if required:
            raise ValidationError("how does Remora log in? give --password-stdin, --key-file FILE or --pem NAME")
        return {}
    if password_stdin:
        return {"auth_type": "password", "password": read_secret_line("password")}
    if key_file:
        try:
            body: dict[str, Any] = {"auth_type": "key", "private_key": key_file.read_text(encoding="utf-8")}
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"--key-file {key_file}: {getattr(exc, 'strerror', None) or exc}") from None
        if passphrase_stdin:
            body["passphrase"] = read_secret_line("passphrase")
        return body
    return {"auth_type": "pem", "pem_file": pem}


@servers_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A unique name for the server.", show_default=False)],
    host: Annotated[str, typer.Option("--host", "-H", help="Hostname or IP address.", show_default=False)],
    user: Annotated[str, typer.Option("--user", "-u", help="SSH user.", show_default=False)],
    port: Annotated[int, typer.Option("--port", "-P", min=1, max=65535, help="SSH port.")] = 22,
    password_stdin: PasswordStdin = False,
    key_file: KeyFile = None,
    passphrase_stdin: PassphraseStdin = False,
    pem: PemOpt = None,
    tag: TagOpt = None,
    max_jobs: MaxJobsOpt = None,
    host_key_policy: PolicyOpt = None,
    jump: JumpOpt = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Register a server to run jobs on.

    Example: remora servers add web-1 --host 10.0.0.5 --user deploy --key-file ~/.ssh/id_ed25519 --tag web

    Behind a bastion: remora servers add db-1 --host 10.1.0.7 --user deploy --key-file KEY --jump bastion
    """
    body: dict[str, Any] = {"name": name, "hostname": host, "port": port, "user": user, "tags": list(tag or [])}
    body.update(credentials(password_stdin, key_file, passphrase_stdin, pem, required=True))
    if max_jobs is not None:
        body["max_concurrent_jobs"] = max_jobs
    if host_key_policy:
        body["host_key_policy"] = host_key_policy
    if jump:
        body["jump_server"] = jump
    server = make_client(api_url, token).create_server(body)
    if as_json:
        print_json(server)
    else:
        err(
            f"[green]✓[/] added server [bold]{server.get('name', name)}[/] ({server.get('id', '')}); check it with: remora servers test {name}"
        )


def _key_path(raw: str, host: Any, base: Path) -> Path:
    """A key file named in an inventory, as ssh would find it: ``~``, %d %u %h %r %n %% tokens; relative to the inventory."""
    import getpass
    import re

    tokens = {
        "d": str(Path.home()),
        "u": getpass.getuser(),
        "h": host.hostname or host.name,
        "r": host.user or "",
        "n": host.name,
        "%": "%",
    }

    def token(match: re.Match[str]) -> str:
        if match.group(1) not in tokens:
            raise ValidationError(f"unsupported token %{match.group(1)}")
        return tokens[match.group(1)]

    path = Path(re.sub(r"%(.)", token, raw)).expanduser()
    return path if path.is_absolute() else base / path


def inventory_keys(hosts: list[Any], base: Path, default_key: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """(host name -> private key text, host name -> why its key file could not be read), each file read once."""
    texts: dict[Path, str | Exception] = {}
    keys: dict[str, str] = {}
    problems: dict[str, str] = {}
    for host in hosts:
        if host.skip:
            continue
        raw = host.identity_file
        if raw is None and (default_key is None or host.password or host.pem_file):
            continue
        try:
            path = _key_path(raw, host, base) if raw is not None else default_key
        except ValidationError as exc:
            problems[host.name] = f"cannot read key file {raw}: {exc.message}"
            continue
        assert path is not None
        if path not in texts:
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                texts[path] = exc
        text = texts[path]
        if isinstance(text, Exception):
            problems[host.name] = f"cannot read key file {path}: {getattr(text, 'strerror', None) or text}"
        else:
            keys[host.name] = text
    return keys, problems


@servers_app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help="Inventory file, or - for stdin.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="ssh-config, ansible (INI or YAML) or csv.", show_default=False)],
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag every imported server (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; change nothing.")] = False,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Private key for hosts that name none (stored encrypted).")] = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create or update many servers from an inventory in one request; existing names are updated.

    ssh-config: Host aliases (wildcards skipped), HostName, User, Port, IdentityFile.
    ansible: INI or YAML; groups become tags; ansible_host/_user/_port/_ssh_private_key_file.
    csv: a header of name, hostname, port, user, tags (;-separated), auth_type, key_file, password, pem_file.
    Key files are read here (relative paths from the inventory's directory) and sent to be stored
    encrypted, like --key-file of `servers add`; the API never reads a path. ssh-config ProxyJump
    (one hop: a Host of the same file or an existing server) becomes the server's jump server;
    other hosts behind a ProxyJump are skipped with the reason.

    Example: remora servers import ~/.ssh/config --format ssh-config --tag imported --dry-run
    """
    from remora import inventory

    kind = inventory.normalize_format(fmt)
    try:
        content = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{file}: {getattr(exc, 'strerror', None) or exc}") from None
    hosts = inventory.parse(kind, content)
    base = Path.cwd() if file == "-" else Path(file).resolve().parent
    keys, problems = inventory_keys(hosts, base, key_file.expanduser() if key_file else None)
    body: dict[str, Any] = {"format": kind, "content": content, "tags": list(tag or []), "dry_run": dry_run}
    if keys:
        body["keys"] = keys
    result = make_client(api_url, token, timeout=300.0).import_servers(body)
    for item in result.get("skipped") or []:
        if item.get("name") in problems:
            item["reason"] = problems[item["name"]]
    if as_json:
        print_json(result)
        return
    from rich.markup import escape

    created, updated, skipped = result.get("created") or [], result.get("updated") or [], result.get("skipped") or []
    verb = "would be" if dry_run else "were"
    for name in created:
        out(f"[green]+[/] {escape(name)}")
    for name in updated:
        out(f"[yellow]~[/] {escape(name)}")
    for item in skipped:
        out(f"[dim]-[/] {escape(str(item.get('name', '')))}: {escape(str(item.get('reason', '')))}")
    err(
        f"{len(created)} {verb} created, {len(updated)} updated, {len(skipped)} skipped"
        + (" (dry run: nothing changed)" if dry_run else "")
    )


@servers_app.command("list")
def list_servers(
    tag: Annotated[str | None, typer.Option("--tag", help="Only servers with this tag.")] = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List servers.

    Example: remora servers list --tag web
    """
    servers = make_client(api_url, token).servers(tag=tag)
    if as_json:
        print_json({"servers": servers})
        return
    if not servers:
        err("no servers (add one: remora servers add NAME --host H --user U --key-file F)")
        return
    from rich.table import Table

    from remora.cli.common import console

    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ADDRESS", "AUTH", "TAGS", "MAX", "ACTIVE", "LAST TEST", "ID"):
        table.add_column(column)
    for s in servers:
        test = "" if s.get("last_test_ok") is None else ("[green]ok[/]" if s.get("last_test_ok") else "[red]failed[/]")
        address = (
            s.get("hostname", "") if s.get("auth_type") == "local" else f"{s.get('user', '')}@{s.get('hostname', '')}:{s.get('port', 22)}"
        )
        if s.get("jump_server"):
            address += f" via {s['jump_server']}"
        table.add_row(
            s.get("name", ""), address, s.get("auth_type", ""), ",".join(s.get("tags") or []), str(s.get("max_concurrent_jobs") or ""),
            "yes" if s.get("is_active", True) else "[dim]no[/]", test, str(s.get("id", ""))[:8],
        )  # fmt: skip
    console().print(table)


@servers_app.command("show")
def show(name: NameArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Show one server (secrets are never shown).

    Example: remora servers show web-1
    """
    client = make_client(api_url, token)
    server = client.server(client.resolve_server(name)["id"])
    if as_json:
        print_json(server)
        return
    from rich.table import Table

    from remora.cli.common import console

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in server.items():
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif key.endswith("_at"):
            value = fmt_time(value)
        table.add_row(key, str(value))
    console().print(table)


@servers_app.command("update")
def update(
    name: NameArg,
    new_name: Annotated[str | None, typer.Option("--name", help="Rename the server.")] = None,
    host: Annotated[str | None, typer.Option("--host", "-H", help="New hostname.")] = None,
    port: Annotated[int | None, typer.Option("--port", "-P", min=1, max=65535, help="New SSH port.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="New SSH user.")] = None,
    password_stdin: PasswordStdin = False,
    key_file: KeyFile = None,
    passphrase_stdin: PassphraseStdin = False,
    pem: PemOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Replace the tags (repeatable).")] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    max_jobs: MaxJobsOpt = None,
    host_key_policy: PolicyOpt = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Enable or disable the server.")] = None,
    jump: JumpOpt = None,
    no_jump: Annotated[bool, typer.Option("--no-jump", help="Connect directly (remove the jump server).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change a server: only the given fields change.

    Example: remora servers update web-1 --port 2222 --tag web --tag eu
    """
    body: dict[str, Any] = {
        k: v
        for k, v in {"name": new_name, "hostname": host, "port": port, "user": user, "max_concurrent_jobs": max_jobs,
                     "host_key_policy": host_key_policy, "is_active": active}.items()
        if v is not None
    }  # fmt: skip
    if tag or clear_tags:
        body["tags"] = [] if clear_tags else list(tag or [])
    if jump and no_jump:
        raise ValidationError("choose one of --jump and --no-jump")
    if jump or no_jump:
        body["jump_server"] = jump or None
    body.update(credentials(password_stdin, key_file, passphrase_stdin, pem, required=False))
    if not body:
        raise ValidationError("nothing to change: give at least one option (see --help)")
    client = make_client(api_url, token)
    server = client.update_server(client.resolve_server(name)["id"], body)
    if as_json:
        print_json(server)
    else:
        err(f"[green]✓[/] updated {server.get('name', name)}")


@servers_app.command("rm")
def remove(
    names: Annotated[list[str], typer.Argument(help="Server names (or ids).", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Also delete the servers' finished jobs and their output.")] = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove servers. Refused while jobs are active, or with job history unless --force.

    Example: remora servers rm web-1 --force
    """
    client = make_client(api_url, token)
    for name in names:
        result = client.delete_server(client.resolve_server(name)["id"], force=force)
        deleted = result.get("deleted_jobs")
        err(f"removed {name}" + (f" and {deleted} job(s)" if deleted else ""))


@servers_app.command("test")
def test(names: Annotated[list[str], typer.Argument(help="Server names (or ids).")], as_json: JsonOpt = False,
         api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:  # fmt: skip
    """Log in over SSH and run `true`; report latency and host key (and each jump host's latency). Exits 1 when any failed.

    Example: remora servers test web-1 web-2
    """
    client = make_client(api_url, token)
    results, failed = [], 0
    for name in names:
        result = {"server": name, **client.test_server(client.resolve_server(name)["id"])}
        results.append(result)
        ok = result.get("status") == "connection_successful"
        failed += not ok
        if not as_json:
            if ok:
                out(f"[green]✓[/] {name}: {result.get('latency_ms', 0):.0f} ms, host key {result.get('host_key_fingerprint', '')}")
                hops = result.get("hops") or []
                if len(hops) > 1:  # through jump hosts: each hop's share
                    for hop in hops:
                        out(f"    {hop.get('name', '')} ({hop.get('host', '')}:{hop.get('port', '')}): {hop.get('ms', 0):.0f} ms")
            else:
                out(f"[red]✗[/] {name}: {result.get('error') or result.get('message') or 'connection failed'}")
    if as_json:
        print_json(results[0] if len(results) == 1 else results)
    if failed:
        raise typer.Exit(ExitCode.FAILURE)


@servers_app.command("status")
def status(
    names: Annotated[list[str] | None, typer.Argument(help="Server names (or ids); none with --all.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every server, probed concurrently.")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Check TCP reachability of servers' SSH ports. Exits 1 when any is unreachable.

    Example: remora servers status --all
    """
    client = make_client(api_url, token)
    if all_ or not names:
        if not all_:
            raise ValidationError("name servers, or use --all")
        data = client.all_server_status()
        rows = data.get("servers") or []
    else:
        rows = [client.server_status(client.resolve_server(n)["id"]) for n in names]
        data = rows[0] if len(rows) == 1 else {"servers": rows}
    if as_json:
        print_json(data)
    else:
        for row in rows:
            ok = row.get("status") == "connected"
            mark = "[green]connected[/]" if ok else "[red]disconnected[/]"
            out(
                f"{row.get('server_name', row.get('name', ''))}: {mark} {row.get('hostname', '')}:{row.get('port', '')} {row.get('message', '')}"
            )
    if any(row.get("status") != "connected" for row in rows):
        raise typer.Exit(ExitCode.FAILURE)


@keys_app.command("upload")
def keys_upload(
    file: Annotated[Path, typer.Argument(help="A PEM private key file (.pem or .key).", show_default=False)],
    name: Annotated[str | None, typer.Option("--name", help="Name to store it under (default: the file name).")] = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Upload a PEM private key (stored encrypted; never shown again).

    Example: remora keys upload ~/.ssh/deploy.pem --name deploy.pem
    """
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{file}: {exc.strerror or exc}") from None
    result = make_client(api_url, token).upload_pem(name or file.name, content)
    if as_json:
        print_json(result)
    else:
        err(
            f"[green]✓[/] uploaded {result.get('filename', name or file.name)}; use it with: remora servers add … --pem {result.get('filename', '')}"
        )


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """List uploaded PEM keys (name, size, fingerprint; never content).

    Example: remora keys list
    """
    files = make_client(api_url, token).pem_files()
    if as_json:
        print_json({"files": files})
        return
    if not files:
        err("no keys (upload one: remora keys upload FILE)")
        return
    from rich.table import Table

    from remora.cli.common import console

    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "SIZE", "FINGERPRINT", "UPLOADED"):
        table.add_column(column)
    for f in files:
        table.add_row(f.get("filename", ""), str(f.get("size", "")), f.get("fingerprint", ""), fmt_time(f.get("uploaded_at")))
    console().print(table)


@keys_app.command("rm")
def keys_rm(
    name: Annotated[str, typer.Argument(help="Key name.", show_default=False)], api_url: ApiUrlOpt = None, token: TokenOpt = None
) -> None:
    """Remove an uploaded key (refused while a server uses it).

    Example: remora keys rm deploy.pem
    """
    make_client(api_url, token).delete_pem(name)
    err(f"removed {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(servers_app, name="servers")
    app.add_typer(keys_app, name="keys")
