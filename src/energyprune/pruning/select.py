"""Which modules a selector names: a module, a name, ``"re:<regex>"`` on names, or a type
(the ``ignored_layers`` of a prune)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from energyprune.errors import ConfigError

__all__ = ["Selector", "select_modules"]

#: what names a module to leave alone: the module, its name, ``"re:<regex>"``, or a type
Selector = nn.Module | str | type


def select_modules(model: nn.Module, selectors: Iterable[Selector]) -> list[nn.Module]:
    """Modules matched by selectors: a module, a name, ``"re:<regex>"`` on names, or a type."""
    named = list(model.named_modules())
    chosen: list[nn.Module] = []
    for sel in selectors:
        if isinstance(sel, nn.Module):
            hits = [m for _, m in named if m is sel]
        elif isinstance(sel, type):
            hits = [m for _, m in named if isinstance(m, sel)]
        elif isinstance(sel, str) and sel.startswith("re:"):
            pattern = re.compile(sel[3:])
            hits = [m for n, m in named if n and pattern.fullmatch(n)]
        else:
            hits = [m for n, m in named if n == sel]
        if not hits:
            raise ConfigError(
                f"selector {sel!r} matches no module; use a module name (e.g. "
                f"{named[1][0] if len(named) > 1 else 'fc'}), 're:<regex>' or a module type"
            )
        chosen += [m for m in hits if all(m is not c for c in chosen)]
        # a selected container also protects its children
        for m in hits:
            chosen += [c for c in m.modules() if all(c is not x for x in chosen)]
    return chosen
