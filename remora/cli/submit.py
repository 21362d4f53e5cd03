"""``remora submit`` and ``remora run -f``: send jobs to the API, optionally wait and follow."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from remora.cli.common import parse_kv, plain_text, print_json, start_time
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, out, server_name, short, stderr_tty, stdout_tty
from remora.errors import ValidationError

WaitOpt = Annotated[
    bool, typer.Option("--wait", "-w", help="Block until the job(s) finish, print their stdout/stderr; exit with the job's exit code.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="With --wait: do not print the jobs' output, only wait.")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Stream stdout/stderr live, every host over one stream (implies --wait).")]


def parse_timeout(value: str | None) -> int | None:
    """'90', '90s', '10m' -> whole seconds (rounded up)."""
    if value is None:
        return None
    from remora.units import parse_job_timeout

    try:
        return parse_job_timeout(value)
    except ValueError as exc:
        raise ValidationError(f"--timeout {value!r}: {exc}") from None


def rollout_value(value: str | None, option: str) -> int | str | None:
    """'3' -> 3, '25%' -> '25%' (the API checks the range); anything else is a usage error."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    if text.endswith("%") and text[:-1].isdigit():
        return text
    raise ValidationError(f"{option} {value!r}: expected a number or a percentage like 25%")


def read_secret_env(names: list[str]) -> dict[str, str]:
    """``--secret-env NAME``: the value of NAME in this environment, else typed at a prompt (never from argv)."""
    import getpass
    import os

    from remora.config import job_env_name_problem

    values: dict[str, str] = {}
    for name in names:
        if "=" in name:  # not echoed: it may hold the value
            raise ValidationError("--secret-env takes a NAME only: give the NAME only, the value comes from the environment or a prompt")
        problem = job_env_name_problem(name)
        if problem:
            raise ValidationError(f"--secret-env {name!r}: {problem}")
        value = os.environ.get(name)
        if value is None:
            if not sys.stdin.isatty():
                raise ValidationError(f"--secret-env {name}: {name} is not set in the environment (and there is no terminal to ask)")
            value = getpass.getpass(f"{name}: ")
        values[name] = value
    return values


def read_script(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"--script {path}: {exc.strerror or exc}") from None


def submit(
    command: Annotated[
        list[str] | None, typer.Argument(help="The command and its arguments (after --), or the script's arguments.")
    ] = None,
    server: Annotated[list[str] | None, typer.Option("--server", "-s", help="Server name or id (repeatable). Default: local.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Every server with this tag (repeatable).")] = None,
    priority: Annotated[int | None, typer.Option("--priority", "-p", min=1, max=10, help="1 (highest) … 10 (lowest); default 5.")] = None,
    timeout: Annotated[str | None, typer.Option("--timeout", "-t", help="Job timeout: seconds or 90s, 10m, 1h.")] = None,
    retries: Annotated[int | None, typer.Option("--retries", min=0, max=10, help="Re-runs after a failure (0-10).")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment variable KEY=VALUE (repeatable).")] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(
            "--secret-env",
            help="Secret variable NAME (repeatable): its value is read from this environment, else prompted for; "
            "stored encrypted, never shown, masked as *** in the output.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A name for the job.")] = None,
    script: Annotated[str | None, typer.Option("--script", help="Run this script file ('-' reads stdin) instead of a command.")] = None,
    shell: Annotated[str | None, typer.Option("--shell", help="Shell for --script (an allowed shell, e.g. /bin/bash).")] = None,
    rollout: Annotated[
        str | None, typer.Option("--rollout", help="Several servers: at most this many (N or P% of them) run at once.")
    ] = None,
    max_failures: Annotated[
        str | None,
        typer.Option("--max-failures", help="Several servers: once more than this many (N or P%) failed, the rest are canceled."),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Start no earlier than this time: 2026-12-24T03:00Z (no offset: local time).")
    ] = None,
    in_: Annotated[str | None, typer.Option("--in", help="Start no earlier than this long from now: 90s, 10m, 2h.")] = None,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
    follow: FollowOpt = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a command or script to one or more servers.

    Without --wait/--follow it prints the new job id(s) and exits 0. --wait
    prints the jobs' stdout and stderr when they finish (--quiet: only waits);
    --follow streams them live (every host's lines, prefixed by its name, over
    one stream from the API) and, on several servers, ends with a summary
    per host. Both exit with the job's own exit code (0-255); several
    servers: non-zero when any failed. Remora's own outcomes: 124 timed out,
    125 canceled, 69 API unreachable, 75 gave up waiting.

    A rolling upgrade: --rollout 25% runs a quarter of the hosts at a time,
    each next host starting as one finishes; --max-failures 2 stops the batch
    once a third host failed (the hosts not yet started end canceled).

    A delayed job: --at 2026-12-24T03:00Z or --in 10m keeps it queued until then.

    Example: remora submit --tag web --rollout 25% --max-failures 2 --follow -- ./upgrade.sh
    """
    argv = list(command or [])
    body: dict[str, Any] = {"servers": list(server or []) + [f"tag:{t}" for t in tag or []] or ["local"]}
    if script is not None:
        body["script"] = read_script(script)
        if shell:
            body["shell"] = shell
        if argv:
            body["args"] = shlex.join(argv)
    else:
        if not argv:
            raise ValidationError("nothing to run: give a command after -- (remora submit -- uptime) or --script FILE")
        if shell:
            raise ValidationError("--shell goes with --script")
        body["command"] = argv[0]
        if argv[1:]:
            body["args"] = shlex.join(argv[1:])
    optional = {"name": name, "priority": priority, "timeout": parse_timeout(timeout), "retries": retries}
    body.update({k: v for k, v in optional.items() if v is not None})
    if env:
        body["env"] = parse_kv(env, "--env")
    if secret_env:
        body["secret_env"] = read_secret_env(secret_env)
    limits = {"concurrency": rollout_value(rollout, "--rollout"), "max_failures": rollout_value(max_failures, "--max-failures")}
    if any(v is not None for v in limits.values()):
        body["rollout"] = {k: v for k, v in limits.items() if v is not None}
    run_at = start_time(at, in_)
    if run_at:
        body["run_at"] = run_at
    client = make_client(api_url, token)
    jobs = client.submit(body)
    finish(client, jobs, wait=wait, follow=follow, as_json=as_json, quiet=quiet)


def finish(
    client: Any,
    jobs: list[dict[str, Any]],
    *,
    wait: bool,
    follow: bool,
    as_json: bool,
    batch_id: str | None = None,
    quiet: bool = True,
) -> None:
    """Print what was submitted, or wait/follow and exit with the jobs' code."""
    if not (wait or follow):
        report_submitted(jobs, as_json=as_json, batch_id=batch_id)
        return
    from remora.cli.follow import Watcher, combined_exit_code, print_outputs, summary_line, with_bodies

    if not follow and not as_json and stderr_tty():
        for job in jobs:
            err(f"[dim]submitted {short(job['id'])} on {server_name(job)}[/]")
    printing = not (follow or quiet or as_json)  # --wait: the outputs are printed at the end
    progress = not follow and len(jobs) > 1 and stderr_tty()
    watcher = Watcher(client, jobs, follow=follow, progress=progress, use_feed=True, fresh=True, with_output=printing)
    try:
        final = watcher.run()
    except KeyboardInterrupt:
        ids = " ".join(short(j["id"]) for j in jobs)
        sys.stderr.write(f"\nstopped waiting; the job(s) keep running: remora jobs wait {ids}\n")
        raise
    if printing:
        # --wait: the finished jobs' output, read from the start (lines prefixed by server when several)
        print_outputs(client, final, watcher.hosts)
    if as_json:
        final = with_bodies(client, final) if not follow else final
        print_json(final[0] if len(final) == 1 else {"batch_id": batch_id or final[0].get("batch_id"), "jobs": final})
    elif follow and len(final) > 1:
        host_summary(final)
    elif not follow or stderr_tty():
        for job in final:
            err(summary_line(job))
    else:  # --follow into a pipe: stderr is the jobs' own, except for Remora's own failures
        for job in final:
            if not_the_commands_own(job):
                sys.stderr.write(f"remora: {plain_text(summary_line(job))}\n")
    raise typer.Exit(combined_exit_code(final))


def host_summary(jobs: list[dict[str, Any]]) -> None:
    """A fan-out's end on stderr: one row per host with its status and exit code (stdout stays the jobs' own)."""
    rows = [(server_name(j), str(j.get("status") or "?"), "-" if j.get("exit_code") is None else str(j["exit_code"])) for j in jobs]
    widths = [max(len(r[i]) for r in [("HOST", "STATUS", "EXIT"), *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [("HOST", "STATUS", "EXIT"), *rows]]
    for job in jobs:
        if not_the_commands_own(job) and job.get("error"):
            lines.append(f"{server_name(job)}: {job['error']}")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def not_the_commands_own(job: dict[str, Any]) -> bool:
    """True when a job ended by Remora's doing (SSH error, timeout, cancel), not by its command's exit."""
    error = str(job.get("error") or "")
    return job.get("status") != "completed" and (job.get("exit_code") is None or (bool(error) and not error.startswith("exit code")))


def report_submitted(jobs: list[dict[str, Any]], *, as_json: bool, batch_id: str | None = None) -> None:
    if as_json:
        print_json(jobs[0] if len(jobs) == 1 else {"batch_id": batch_id or jobs[0].get("batch_id"), "jobs": jobs})
        return
    if not stdout_tty():
        sys.stdout.write("".join(f"{j['id']}\n" for j in jobs))
        sys.stdout.flush()
        return
    for job in jobs:
        out(f"[green]✓[/] job [bold]{job['id']}[/] queued on {server_name(job)}")
    if len(jobs) > 1 and jobs[0].get("batch_id"):
        out(f"  batch {jobs[0]['batch_id']}: remora jobs list --batch {jobs[0]['batch_id']}")


def run(
    file: Annotated[list[Path], typer.Option("--file", "-f", help="YAML job file ('-' reads stdin); repeatable.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field in every job: key=value, env.NAME=value.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", help="A value for the jobs' parameters: NAME=VALUE (repeatable; quoted into {{ NAME }}, REMORA_PARAM_NAME)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print what would be submitted; submit nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Block until every job finished; exit with their code.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Stream output live over one stream, lines prefixed by server (implies --wait).")
    ] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit the jobs described in YAML job files (see remora-jobfile(5)).

    A file holds one job, a `jobs:` list, or several YAML documents. Mistakes
    are reported as FILE:LINE:COLUMN: message, before anything is submitted.

    Example: remora run -f deploy.yaml --set priority=2 --follow
    """
    from remora import jobfile

    specs = [spec for path in file for spec in jobfile.load_file(path, list(set_ or []))]
    given = parse_kv(param, "--param")
    declared = {p.get("name") for spec in specs for p in spec.parameters or []}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise ValidationError(f"--param {unknown[0]}: no job in the file declares a parameter of that name")
    specs = [
        spec.with_parameters({k: v for k, v in given.items() if k in {p.get("name") for p in spec.parameters}}) if spec.parameters else spec
        for spec in specs
    ]
    if dry_run:
        print_dry_run(specs, as_json=as_json)
        return
    client = make_client(api_url, token)
    jobs: list[dict[str, Any]] = []
    for spec in specs:
        jobs.extend(client.submit(spec.payload()))
    batch_ids = {j.get("batch_id") for j in jobs}
    batch = next(iter(batch_ids)) if len(batch_ids) == 1 else None
    finish(client, jobs, wait=wait, follow=follow, as_json=as_json, batch_id=batch)


def print_dry_run(specs: list[Any], *, as_json: bool) -> None:
    if as_json:
        print_json(
            [{**spec.payload(), **({"secret_env": dict.fromkeys(spec.secret_env, "***")} if spec.secret_env else {})} for spec in specs]
        )
        return
    from rich.markup import escape

    lines = [f"[bold]{len(specs)} job(s) would be submitted[/] (dry run: nothing was sent)"]
    for spec in specs:
        lines.append(f"\n[dim]{escape(spec.source)}[/]  [bold]{escape(spec.name or '(unnamed)')}[/] -> {escape(', '.join(spec.servers))}")
        if spec.script is None:
            lines.append(f"  command: {escape(f'{spec.command} {spec.args}'.strip())}")
        else:
            lines.append(f"  script ({escape(spec.shell or 'default shell')}{', args ' + escape(spec.args) if spec.args else ''}):")
            lines.extend(f"    {escape(line)}" for line in spec.script.rstrip("\n").splitlines())
        limits = [f"{k} {v}" for k, v in (("priority", spec.priority), ("timeout", spec.timeout and f"{spec.timeout}s"),
                                           ("retries", spec.retries), ("pty", spec.pty), ("queue", spec.queue)) if v is not None]  # fmt: skip
        if spec.env:
            limits.append("env " + " ".join(f"{k}={v}" for k, v in spec.env.items()))
        if spec.secret_env:
            limits.append("secret_env " + " ".join(f"{k}=***" for k in spec.secret_env))
        if spec.rollout:
            limits.append("rollout " + " ".join(f"{k}={v}" for k, v in spec.rollout.items()))
        if limits:
            lines.append("  " + escape(", ".join(limits)))
    out("\n".join(lines))


def register(app: typer.Typer) -> None:
    ctx = {"allow_interspersed_args": False}
    app.command("submit", context_settings=ctx)(submit)
    app.command("run")(run)
