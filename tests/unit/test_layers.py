"""The layer arrows of DESIGN.md ("Layout"), read from the source with ``ast``: a new leak fails here.

Every module under ``remora/`` is parsed (nothing is imported).  An import
counts wherever it stands -- module level or inside a function -- except in an
``if TYPE_CHECKING:`` block (type-only, never run).  The rules:

- nothing imports ``remora.cli`` but itself and ``remora.__main__`` (the
  entry point), nothing imports ``remora.api`` but itself and ``remora.cli``
  (the one exception: ``remora api`` and ``remora up`` start the API server);
- ``remora.executor`` and ``remora.netqueue`` know no database: neither they
  nor anything they import (transitively) reaches ``remora.models``,
  ``remora.services``, peewee or playhouse;
- ``remora.models`` imports nothing of ours but ``remora.errors``;
- ``remora.cli`` touches ``remora.models`` only to open and close the
  database (the process's job); every query goes through ``remora.services``;
- a third-party library lives in one place: paramiko in ``executor/``,
  peewee/playhouse in ``models/``, yaml in ``jobfile.py``, typer/rich in
  ``cli/``, waitress in ``api/``;
- no import cycle between the top-level units (a package, or a module
  directly under ``remora/``), counting function-local imports too.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "remora"

CLI_MODEL_LIFECYCLE = {"init_db", "close_db", "ensure_schema"}
THIRD_PARTY_HOMES = {
    "paramiko": ("remora.executor",),
    "peewee": ("remora.models",),
    "playhouse": ("remora.models",),
    "yaml": ("remora.jobfile",),
    "typer": ("remora.cli",),
    "rich": ("remora.cli",),
    "waitress": ("remora.api",),
}


@dataclass(frozen=True)
class Import:
    importer: str  # module doing the import
    target: str  # module (or package) imported
    line: int
    local: bool  # inside a function: runs when called, not at import time
    names: tuple[str, ...] = ()  # for ``from X import a, b``: a, b

    def __str__(self) -> str:
        where = "function-local " if self.local else ""
        what = f"from {self.target} import {', '.join(self.names)}" if self.names else f"import {self.target}"
        return f"{self.importer} line {self.line}: {where}{what}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "static" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, local: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below ``node`` with whether it sits in a function, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other, local
                yield from _walk(other, local)
            continue
        inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, inner
        yield from _walk(child, inner)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, local in _walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno, local) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = tuple(alias.name for alias in node.names)
            submodules = [n for n in names if f"{base}.{n}" in modules]
            for sub in submodules:  # ``from remora import models``: the module remora.models
                found.append(Import(name, f"{base}.{sub}", node.lineno, local, (sub,)))
            rest = tuple(n for n in names if n not in submodules)
            if rest or not submodules:
                found.append(Import(name, base, node.lineno, local, rest))
    return found


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def unit(module: str) -> str:
    """The top-level unit a module belongs to: ``remora.worker.core`` -> ``remora.worker``."""
    return ".".join(module.split(".")[:2])


# -- the rules (each returns the offending imports, as text) -------------------------------------


def cli_and_api_importers(graph: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    allowed = {"remora.cli": {"remora.__main__"}, "remora.api": {"remora.__main__", "remora.cli"}}  # cli starts the API server
    return [
        str(imp)
        for name, imps in graph.items()
        for imp in imps
        if unit(imp.target) in allowed
        and unit(name) != unit(imp.target)
        and name not in allowed[unit(imp.target)]
        and unit(name) not in allowed[unit(imp.target)]
    ]


def model_paths(graph: dict[str, list[Import]], start: str, forbidden: tuple[str, ...]) -> list[str]:
    """Chains of imports from ``start`` (breadth first) that reach a forbidden module or library."""
    seen = {start}
    queue: list[tuple[str, list[Import]]] = [(start, [])]
    leaks = []
    while queue:
        name, chain = queue.pop(0)
        for imp in graph.get(name, []):
            if within(imp.target, *forbidden):
                leaks.append(" -> ".join(str(i) for i in [*chain, imp]))
                continue
            target = imp.target if imp.target in graph else None
            if target and target not in seen:
                seen.add(target)
                queue.append((target, [*chain, imp]))
    return leaks


def database_leaks(graph: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    forbidden = ("remora.models", "remora.services", "peewee", "playhouse")
    leaks = []
    for name in graph:
        if within(name, "remora.executor", "remora.netqueue"):
            leaks += model_paths(graph, name, forbidden)
    return sorted(set(leaks))


def models_imports(graph: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    return [
        str(imp)
        for name, imps in graph.items()
        if within(name, "remora.models")
        for imp in imps
        if within(imp.target, "remora") and not within(imp.target, "remora.models", "remora.errors")
    ]


def cli_model_uses(graph: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    """CLI code naming a model, or a ``models.<x>`` that is not database lifecycle."""
    leaks = []
    for name, imps in graph.items():
        if not within(name, "remora.cli"):
            continue
        for imp in imps:
            if within(imp.target, "remora.models") and not (imp.names and set(imp.names) <= {"models", *CLI_MODEL_LIFECYCLE}):
                leaks.append(str(imp))
        for node in ast.walk(ast.parse(paths[name].read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "models":
                if node.attr not in CLI_MODEL_LIFECYCLE:
                    leaks.append(f"{name} line {node.lineno}: models.{node.attr}")
    return leaks


def misplaced_libraries(graph: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    leaks = []
    for name, imps in graph.items():
        for imp in imps:
            library = imp.target.split(".")[0]
            homes = THIRD_PARTY_HOMES.get(library)
            if homes and not within(name, *homes):
                leaks.append(f"{imp} ({library} lives only in {', '.join(homes)})")
    return leaks


def unit_cycles(graph: dict[str, list[Import]], paths: dict[str, Path]) -> list[str]:
    """Cycles between top-level units, each with one import per arrow."""
    edges: dict[str, dict[str, Import]] = {}
    for name, imps in graph.items():
        for imp in imps:
            a, b = unit(name), unit(imp.target)
            if a != b and within(b, "remora") and b != "remora" and a != "remora":
                edges.setdefault(a, {}).setdefault(b, imp)
    cycles: list[str] = []
    seen_cycles: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                loop = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(loop)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    arrows = "; ".join(str(edges[a][b]) for a, b in itertools.pairwise(loop))
                    cycles.append(f"{' -> '.join(loop)} ({arrows})")
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


RULES = {
    "nothing imports remora.cli or remora.api (but cli starts the API server)": cli_and_api_importers,
    "executor and netqueue know no database (models, services, peewee)": database_leaks,
    "remora.models imports nothing of ours but remora.errors": models_imports,
    "remora.cli opens the database but queries it only through services": cli_model_uses,
    "a third-party library lives in one place": misplaced_libraries,
    "no import cycle between top-level units": unit_cycles,
}


@pytest.fixture(scope="module")
def paths() -> dict[str, Path]:
    return all_modules()


@pytest.fixture(scope="module")
def graph(paths) -> dict[str, list[Import]]:
    return {name: imports_of(name, path, paths) for name, path in paths.items()}


@pytest.mark.parametrize("rule", list(RULES))
def test_layer_rule_holds(graph, paths, rule):
    offending = RULES[rule](graph, paths)
    assert not offending, f"{rule}; offending imports:\n  " + "\n  ".join(offending)


def test_the_scan_sees_the_packages_it_guards(graph):
    """A scan that found nothing would pass every rule: make sure it reads the real tree."""
    for package in ("remora.executor.ssh", "remora.netqueue.client", "remora.models", "remora.cli.up", "remora.worker.core"):
        assert package in graph, package
    assert any(imp.target == "paramiko" for imp in graph["remora.executor.ssh"])
    assert any(imp.target == "remora.executor.target" for imp in graph["remora.services.targets"])


LEAKS = {
    "executor/leak.py": ("from remora.models import Server\n", "executor and netqueue know no database"),
    "executor/indirect.py": ("from remora import output\n", "executor and netqueue know no database"),
    "netqueue/leak.py": ("def f():\n    import peewee\n", "executor and netqueue know no database"),
    "models/leak.py": ("from remora.config import Settings\n", "remora.models imports nothing"),
    "services/leak.py": ("from remora.cli import common\n", "nothing imports remora.cli"),
    "worker/leak.py": ("import paramiko\n", "a third-party library"),
    "cli/leak.py": ("from remora.models import ApiToken\n", "remora.cli opens the database"),
    "cli/query.py": ("from remora import models\n\ndef f():\n    return models.Job.select()\n", "remora.cli opens the database"),
    "errors.py": ("from remora.worker import Worker\n", "no import cycle"),  # the worker imports errors: a loop
}


@pytest.mark.parametrize("where", list(LEAKS))
def test_a_new_leak_fails_naming_the_import(tmp_path, graph, paths, where):
    """Each rule catches a leak planted in a scratch module (the tree is not touched) and names it."""
    code, rule_start = LEAKS[where]
    planted = tmp_path / "remora" / where
    planted.parent.mkdir(parents=True, exist_ok=True)
    original = paths.get(module_name(ROOT / where))
    planted.write_text((original.read_text(encoding="utf-8") if original else "") + "\n" + code)
    name = module_name(planted, tmp_path / "remora")
    leaky_paths = {**paths, name: planted}
    leaky = {**graph, name: imports_of(name, planted, leaky_paths)}
    [rule] = [r for r in RULES if r.startswith(rule_start)]
    offending = RULES[rule](leaky, leaky_paths)
    assert offending, f"{where} was not caught by {rule!r}"
    assert any(name in o for o in offending), offending
