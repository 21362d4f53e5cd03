"""NetQueue's module arrows: server and client share only protocol.py (which re-exports control.py's and
wire.py's names), only protocol.py and control.py import wire.py, and no two netqueue modules import each
other at run time (type-only imports aside)."""

from __future__ import annotations

import ast
from pathlib import Path

NETQUEUE = Path(__file__).resolve().parents[2] / "remora" / "netqueue"
CLIENT_SIDE = {"client", "link"}
SHARED = {"protocol", "control", "wire"}


def runtime_imports(path: Path) -> set[str]:
    """netqueue modules ``path`` imports outside ``if TYPE_CHECKING:`` blocks (lazy imports included)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only or not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        if node.module == "remora.netqueue":
            out |= {alias.name for alias in node.names}
        elif node.module.startswith("remora.netqueue."):
            out.add(node.module.rsplit(".", 1)[1])
    return out


GRAPH = {path.stem: runtime_imports(path) for path in NETQUEUE.glob("*.py")}


def test_server_and_client_share_only_the_protocol():
    for module, deps in GRAPH.items():
        if module in SHARED:
            continue
        side = CLIENT_SIDE if module in CLIENT_SIDE else set(GRAPH) - CLIENT_SIDE - SHARED
        assert deps <= side | {"protocol"}, f"{module} imports {sorted(deps - side - {'protocol'})} across the protocol line"


def test_only_the_protocol_layer_imports_wire_and_control():
    assert sorted(m for m, deps in GRAPH.items() if "wire" in deps) == ["control", "protocol"]
    assert [m for m, deps in GRAPH.items() if "control" in deps] == ["protocol"]


def test_no_import_cycles():
    def visit(module: str, path: list[str]) -> None:
        for dep in GRAPH.get(module, ()):
            assert dep not in path, f"import cycle: {' -> '.join([*path, dep])}"
            visit(dep, [*path, dep])

    for module in GRAPH:
        visit(module, [module])
