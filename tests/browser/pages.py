"""Browser-test page helpers: named screenshots and a signed-in dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "browser"


def shoot(pg: Any, name: str) -> Path:
    """Save a named screenshot mid-test."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    pg.screenshot(path=str(path))
    return path


def signed_in(pg: Any, stack: Any, route: str = "jobs") -> Any:
    """Open the dashboard with the token in the fragment, as `remora up` prints it."""
    pg.goto(f"{stack.url}/#token={stack.token}")
    pg.wait_for_selector("#topbar:not([hidden])")
    if route:
        pg.evaluate(f"location.hash = '#/{route}'")
    return pg
