"""Finding the real services tests need; skip or fail by REMORA_REQUIRE_SERVICES."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def services_required() -> bool:
    return os.environ.get("REMORA_REQUIRE_SERVICES", "") not in ("", "0", "false")


def missing(what: str) -> None:
    """Skip the test, or fail it when CI requires every service."""
    if services_required():
        pytest.fail(f"required service missing: {what} (REMORA_REQUIRE_SERVICES=1)")
    pytest.skip(f"{what} not available")


def find_binary(name: str, extra_dirs: list[str] | None = None) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs or []:
        for candidate in sorted(Path("/").glob(directory.lstrip("/")), reverse=True):
            path = candidate / name
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None
