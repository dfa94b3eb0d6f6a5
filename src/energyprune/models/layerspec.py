"""A single layer written as its ``torch.nn`` constructor, e.g. ``Conv2d(3, 16, 3, padding=1)``.

Measurement tables from edge boards are usually layer sweeps, so a row's model may be a layer.
The text is parsed with :mod:`ast` and built from an allow-list: calls to bare ``torch.nn``
module names (``Conv2d``, ``Sequential``, ...) with literal arguments (numbers, strings, bools,
None, tuples/lists of them) or nested such calls. Nothing is ever ``eval``-ed: attribute chains
(``nn.Conv2d``, ``os.system``), names that are not ``nn.Module`` subclasses, operators,
subscripts and comprehensions are refused with the reason.
"""

from __future__ import annotations

import ast

from torch import nn

from energyprune.errors import ConfigError

__all__ = ["MAX_PARAMETERS", "default_input_shape", "is_layer_spec", "parse_layer"]

#: A layer spec may not build more parameters than this (a typo like ``Linear(10000000, ...)``
#: would otherwise allocate gigabytes before any error).
MAX_PARAMETERS = 500_000_000

_LITERALS = (int, float, str, bool, type(None))


def is_layer_spec(spec: str) -> bool:
    """True when ``spec`` looks like a constructor call (``Name(...)``), not a model name."""
    return "(" in spec


def parse_layer(text: str) -> nn.Module:
    """Build the ``torch.nn`` module that ``text`` writes as a constructor call.

    Raises:
        ConfigError: the text is not one call of allowed names with literal arguments (the
            message names the offending piece), or the constructor rejects its arguments.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"layer spec '{text}' does not parse ({e.msg}); {_HINT}") from e
    module = _build(tree.body, text) if isinstance(tree.body, ast.Call) else None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"layer spec '{text}' is not a module constructor; {_HINT}")
    return module


_HINT = "write one torch.nn constructor with literal arguments, e.g. Conv2d(3, 16, 3, padding=1)"


def _build(node: ast.AST, text: str) -> object:
    if isinstance(node, ast.Call):
        return _call(node, text)
    return _literal(node, text)


def _literal(node: ast.AST, text: str) -> object:
    if isinstance(node, ast.Constant) and isinstance(node.value, _LITERALS):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e, text) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    raise ConfigError(
        f"layer spec '{text}': '{ast.unparse(node)}' is not a literal (numbers, strings, "
        f"True/False/None, tuples or lists of them); {_HINT}"
    )


def _call(node: ast.Call, text: str) -> nn.Module:
    if not isinstance(node.func, ast.Name):
        raise ConfigError(
            f"layer spec '{text}': '{ast.unparse(node.func)}' is not a bare torch.nn name "
            f"(attribute chains are refused; write Conv2d, not nn.Conv2d); {_HINT}"
        )
    cls = getattr(nn, node.func.id, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"layer spec '{text}': '{node.func.id}' is not a torch.nn module; {_HINT}"
        )
    if any(kw.arg is None for kw in node.keywords):
        raise ConfigError(f"layer spec '{text}': '**' arguments are refused; {_HINT}")
    if any(isinstance(a, ast.Starred) for a in node.args):
        raise ConfigError(f"layer spec '{text}': '*' arguments are refused; {_HINT}")
    args = [_build(a, text) for a in node.args]
    kwargs = {kw.arg: _build(kw.value, text) for kw in node.keywords}
    _check_size(cls, args, kwargs, text)
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"layer spec '{text}': {cls.__name__} refused its arguments ({e})") from e


def _check_size(cls: type[nn.Module], args: list, kwargs: dict, text: str) -> None:
    """Build on the meta device first so an absurd size is refused before any allocation."""
    if any(isinstance(a, nn.Module) for a in (*args, *kwargs.values())):
        return  # containers: their children were already built (and checked)
    try:
        probe = cls(*args, **kwargs, device="meta")
    except TypeError:
        return  # no device argument (parameter-free modules): nothing to allocate
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"layer spec '{text}': {cls.__name__} refused its arguments ({e})") from e
    n = sum(p.numel() for p in probe.parameters())
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"layer spec '{text}' has {n:,} parameters (limit {MAX_PARAMETERS:,}); check the widths"
        )


def default_input_shape(module: nn.Module) -> tuple[int, ...]:
    """A batch-1 input the layer accepts: ``(1, in_features)`` for the first Linear,
    ``(1, C_in, 32, ...)`` for the first convolution; None-free fallback ``(1, 3, 224, 224)``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return (1, m.in_features)
        if isinstance(m, nn.modules.conv._ConvNd):
            return (1, m.in_channels, *[32] * len(m.kernel_size))
    return (1, 3, 224, 224)
