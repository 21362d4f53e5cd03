"""``python -m remora.netqueue``: the lean server process ``remora queue serve`` turns into.

``remora queue serve`` parses flags and settings with the full CLI (typer,
click, rich: ~15 MiB resident), validates them, then ``exec``s this module
with the resolved server arguments in ``REMORA_NETQUEUE_SERVE`` (JSON, in the
environment so a token never shows in ``ps``).  Same PID, same stderr, a
fraction of the memory.  Like the CLI, this entry point is the one place
here that reads the environment.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

ENV_VAR = "REMORA_NETQUEUE_SERVE"


def main() -> int:
    from remora.errors import ExitCode, RemoraError
    from remora.logs import setup_logging
    from remora.netqueue.server import QueueServer

    raw = os.environ.pop(ENV_VAR, "")
    if not raw:
        sys.stderr.write("remora: error: start the queue with `remora queue serve`\n")
        return int(ExitCode.USAGE)
    config: dict[str, Any] = json.loads(raw)
    logging_conf = config.pop("logging", {})
    setup_logging(logging_conf.get("level", "info"), logging_conf.get("format", "text"))
    if config.get("data_dir"):
        config["data_dir"] = Path(config["data_dir"])
    try:
        server = QueueServer(**config)

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
