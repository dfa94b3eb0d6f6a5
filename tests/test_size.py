"""Small units (issue 13): no module in ``src/`` over 400 lines, no function over 60 lines of
code (its docstring not counted), so a reader can hold each one in their head."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "energyprune"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    total = fn.end_lineno - fn.lineno + 1
    first = fn.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str):
        total -= first.end_lineno - first.lineno + 1
    return total


def _oversized(source: str, name: str) -> list[str]:
    found = []
    if source.count("\n") > MAX_MODULE_LINES:
        found.append(f"{name}: {source.count(chr(10))} lines")
    for node in ast.walk(ast.parse(source)):
        is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if is_function and (n := _code_lines(node)) > MAX_FUNCTION_LINES:
            found.append(f"{name}:{node.lineno} {node.name}: {n} lines")
    return found


def test_no_module_or_function_is_oversized():
    found = [f for p in sorted(SRC.rglob("*.py")) for f in _oversized(p.read_text(), p.name)]
    assert found == []


def test_the_size_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f'def f():\n    """Doc."""\n{body}\n    return 0\n'
    assert _oversized(source, "m.py") == ["m.py:1 f: 62 lines"]
    assert _oversized('def g():\n    """Doc\n    more."""\n    return 0\n', "m.py") == []


MAX_PARAMETERS = 8


def _many_parameters(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        named = [*a.posonlyargs, *a.args, *a.kwonlyargs]
        n = len(named) + (a.vararg is not None) + (a.kwarg is not None)
        n -= bool(named) and named[0].arg in ("self", "cls")
        if n > MAX_PARAMETERS:
            found.append(f"{name}:{node.lineno} {node.name}: {n} parameters")
    return found


def test_no_function_takes_more_than_8_parameters():
    """Settings travel as one spec or config value, not as long parameter lists (issue 34)."""
    found = [f for p in sorted(SRC.rglob("*.py")) for f in _many_parameters(p.read_text(), p.name)]
    assert found == []


def test_the_parameter_check_counts_every_kind():
    source = "def f(a, /, b, *c, d, e, f, g, h, **k): pass\nclass C:\n    def m(self, a): pass\n"
    assert _many_parameters(source, "m.py") == ["m.py:1 f: 9 parameters"]
