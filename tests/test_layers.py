"""The package's imports go one way (import-linter's layers contract, pyproject) and form no
cycle, not even inside a layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected components of more than one module (the root package excluded: its
    ``__init__`` re-exports the public API)."""
    modules = sorted(m for m in graph.modules if m != "energyprune")
    edges = {
        m: [n for n in graph.find_modules_directly_imported_by(m) if n in modules] for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles():
    assert _cycles(grimp.build_graph("energyprune")) == []


def test_cycle_finder_finds_one():
    graph = grimp.ImportGraph()
    for m in ("energyprune", "energyprune.a", "energyprune.b", "energyprune.c"):
        graph.add_module(m)
    graph.add_import(importer="energyprune.a", imported="energyprune.b")
    graph.add_import(importer="energyprune.b", imported="energyprune.a")
    graph.add_import(importer="energyprune.c", imported="energyprune.a")
    assert _cycles(graph) == [{"energyprune.a", "energyprune.b"}]


def test_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:]


def _private_imports(source: str) -> list[str]:
    """``from energyprune.x import _name`` lines: another module's private name."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("energyprune"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_another_modules_private_name():
    roots = (ROOT / "src" / "energyprune", ROOT / "benchmarks")
    found = {
        str(p.relative_to(ROOT)): names
        for root in roots
        for p in sorted(root.rglob("*.py"))
        if (names := _private_imports(p.read_text()))
    }
    assert found == {}


def test_the_private_import_check_sees_one():
    assert _private_imports("from energyprune.energy.tracing import _aten, ok\n") == [
        "energyprune.energy.tracing._aten"
    ]
