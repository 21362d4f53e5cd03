"""The ``remora`` command: services (queue, worker, api, up) and client commands.

``main()`` is the one place where exceptions become messages and exit codes
(see ``remora.errors.ExitCode``); no traceback reaches a user without
``--debug``.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import Annotated, Any

import typer

from remora import __version__
from remora.cli.common import STATE
from remora.errors import ExitCode, RemoraError

_app = typer.Typer(
    name="remora",
    help="Run shell commands and scripts on fleets of servers, through a durable priority queue.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"remora {__version__}")
        raise typer.Exit()


@_app.callback()
def _root(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (TOML). Default: $REMORA_CONFIG, ./remora.toml, ~/.config/remora/config.toml, /etc/remora/config.toml.",
            envvar=None,
        ),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (debug).")] = 0,
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="Less log output (warnings only).")] = 0,
    log_format: Annotated[str | None, typer.Option("--log-format", help="Log format: text or json.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Debug logs and full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Remora runs shell commands and scripts on your servers over SSH.

    Example: remora up    (then open the printed dashboard URL)
    """
    STATE.config_path = config
    STATE.verbosity = verbose - quiet
    STATE.log_format = log_format
    STATE.debug = debug
    STATE._settings = None


# The module that registers each top-level command.  ``main`` imports only the one the command line
# names, so a client command does not pay for importing and building every other (a unit test keeps
# this table equal to what the modules register).
COMMAND_MODULES = {
    "up": "up",
    "queue": "queue",
    "worker": "worker",
    "api": "api",
    "token": "api",
    "submit": "submit",
    "run": "submit",
    "jobs": "jobs",
    "batches": "batches",
    "templates": "templates",
    "webhooks": "webhooks",
    "schedules": "schedules",
    "servers": "servers",
    "keys": "servers",
    "config": "admin",
    "db": "admin",
    "debug": "debug",
}
_VALUED = {"-c", "--config", "--log-format"}  # the root's options that take a value
_registered: set[str] = set()


def _register(module: str) -> None:
    if module not in _registered:
        _registered.add(module)
        importlib.import_module(f"remora.cli.{module}").register(_app)


def _register_all() -> None:
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        _register(module)


def command_word(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word after the root's options), or None."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return None
        if arg in _VALUED or (arg[:1] == "-" and arg[1:2] != "-" and len(arg) > 2 and arg[-1] == "c" and set(arg[1:]) <= set("vqc")):
            next(args, None)  # -c FILE, or -c last in a cluster of short flags (-vc FILE)
            continue
        if arg[:1] == "-":
            continue
        return arg
    return None


def _prepare(argv: list[str]) -> None:
    """Register the command ``argv`` names, or every command (help, completion, a wrong name)."""
    module = COMMAND_MODULES.get(command_word(argv) or "")
    if module is None or "_REMORA_COMPLETE" in os.environ:  # typer's shell completion (prog_name "remora")
        _register_all()
    else:
        _register(module)


def __getattr__(name: str) -> Any:
    """``remora.cli.app``: the whole command tree (documentation, tests)."""
    if name == "app":
        _register_all()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, RemoraError):
        return int(exc.exit_code)
    return int(ExitCode.SOFTWARE)


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; map every exception to a message on stderr and an exit code."""
    try:
        _prepare(sys.argv[1:] if argv is None else argv)
        # The modules loaded so far live as long as the process: out of the collector's sight, the
        # interpreter's last collection at exit no longer walks them (about 9 of a client command's
        # 83 ms).  What the command creates is collected as usual.
        gc.freeze()
        result = _app(args=argv, standalone_mode=False, prog_name="remora")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(ExitCode.INTERRUPTED)
    except RemoraError as exc:
        if STATE.debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"remora: error: {exc.message}\n")
        sys.exit(_exit_code_for(exc))
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes an exit code
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors
            exc.show()
            sys.exit(ExitCode.USAGE if exc.exit_code == 2 else exc.exit_code)
        import traceback

        if STATE.debug:
            traceback.print_exc()
        else:
            kind = sys.exc_info()[0]
            sys.stderr.write(f"remora: internal error ({kind.__name__ if kind else 'unknown'}); run with --debug for details\n")
        sys.exit(ExitCode.SOFTWARE)
    if isinstance(result, int) and result:
        sys.exit(result)
    sys.exit(0)
