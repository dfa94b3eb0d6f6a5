"""Keyword options built into one settings value at a public entry point.

Every public entry point takes its settings as keywords and builds one frozen dataclass from
them at the door, so each setting is declared once (on the dataclass, with its default and
its check) and a misspelt keyword fails with the names that exist instead of being ignored.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from energyprune.errors import ConfigError

__all__ = ["build"]

T = TypeVar("T")


def build(kind: type[T], base: T | None = None, /, **options: Any) -> T:
    """``kind(**options)``, or ``base`` with ``options`` replaced; unknown names are refused."""
    known = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} for {kind.__name__}: use one of {', '.join(known)}"
        )
    if base is None:
        return kind(**options)
    return replace(base, **options)  # type: ignore[type-var]
