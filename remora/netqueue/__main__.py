"""``python -m remora.netqueue``: the lean queue server process ``remora queue serve`` turns into.

``remora queue serve`` parses its flags with the full CLI (typer, click,
rich: ~15 MiB resident), checks them, then ``exec``s this module with the
same choices as arguments: ``--config FILE`` and one ``--set section.key=value``
per flag given.  Same PID, same stderr, a fraction of the memory.  This
process loads Remora's settings itself (``remora.config.load``: file <
environment < these flags) and builds one ``ServeSettings`` from them, so an
option is declared once, as a config key, and nothing travels in the
environment but what the user put there.  The token never travels in argv:
it comes from REMORA_QUEUE_TOKEN, ``queue.token`` in the config file, or the
token file, read here (``--set queue.token=...`` is refused).  Like the CLI,
this entry point is the one place here that reads the environment.

    python -m remora.netqueue [--config FILE] [--set queue.fsync=never ...]
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

USAGE = "usage: python -m remora.netqueue [--config FILE] [--set section.key=value ...]  (or: remora queue serve)"
SECRET_KEYS = {"queue.token"}  # never accepted in argv: /proc/<pid>/cmdline is readable by every local user


def parse_args(argv: list[str]) -> tuple[str | None, dict[str, str]]:
    """``--config FILE`` and ``--set key=value`` pairs -> (config file, overrides); a ConfigError names a bad one."""
    from remora.errors import ConfigError

    config: str | None = None
    overrides: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        opt, eq, inline = arg.partition("=")
        if opt not in ("--config", "--set"):
            raise ConfigError(f"unknown argument {arg!r}; {USAGE}")
        value = inline if eq else next(args, None)
        if value is None:
            raise ConfigError(f"{opt} needs a value; {USAGE}")
        if opt == "--config":
            config = value
            continue
        key, eq, setting = value.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set {value!r}: expected section.key=value")
        if key in SECRET_KEYS:
            raise ConfigError(f"--set {key}: the token is not taken from the command line; use REMORA_QUEUE_TOKEN or queue.token_file")
        overrides[key] = setting
    return config, overrides


def main(argv: list[str] | None = None) -> int:
    from remora import config as config_mod
    from remora.errors import RemoraError
    from remora.logs import setup_logging
    from remora.netqueue.server import QueueServer, ServeSettings

    try:
        config_file, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        settings = config_mod.load(config_file, os.environ, overrides)
        setup_logging(settings.logging.level, settings.logging.format)
        # the token file is made on first start; Remora's clients on this machine read the same file
        server = QueueServer(ServeSettings.from_config(settings, token=settings.queue_token(create=True)))

        def on_signal(signum: int, _frame: Any) -> None:
            threading.Thread(target=server.stop, name="netqueue-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.start()
        server.serve_forever()
    except RemoraError as exc:
        sys.stderr.write(f"remora: error: {exc.message}\n")
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
