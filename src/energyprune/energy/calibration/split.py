"""Which measured rows a fit may see, and which it is judged on.

The default split holds out whole families (a model, a block family: rows that share a
structure and differ in a setting), so the held-out figures measure transfer to configurations
the fit never saw in any form; a random split by row, shown beside it, measures interpolation.
Grouped folds of the training rows choose a fit's settings (its shrinkage), never the
held-out rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from energyprune.errors import ConfigError

__all__ = ["SPLITS", "Split", "folds", "split"]

SPLITS = ("group", "random", "each")  # each: every family held out in turn (per-token fits)
MIN_HELD = 2


@dataclass(frozen=True)
class Split:
    """Row indices held out and trained on (sorted), and the families held out."""

    held: tuple[int, ...]
    train: tuple[int, ...]
    held_families: tuple[str, ...] = ()


def split(families: Sequence[str], fraction: float, seed: int, by: str = "group") -> Split:
    """Hold out about ``fraction`` of the rows: whole families in a seeded order until the
    share is reached (``group``), or rows in a seeded order (``random``)."""
    n = len(families)
    if by == "random":
        order = list(range(n))
        random.Random(seed).shuffle(order)
        held = sorted(order[: max(MIN_HELD, round(fraction * n))])
        return Split(tuple(held), tuple(sorted(set(range(n)) - set(held))))
    if by == "each":
        raise ConfigError(
            "split each (every family held out in turn) is for per-token tables; use group"
        )
    if by != "group":
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {by!r}")
    names = sorted(set(families))
    if len(names) < 2:
        raise ConfigError(
            f"a grouped split needs rows of at least 2 families, got {len(names)}: give each "
            "row a family (a model, a block family), or split at random"
        )
    random.Random(seed).shuffle(names)
    held_names: list[str] = []
    held: list[int] = []
    for name in names[:-1]:  # at least one family is trained on
        if len(held) >= max(MIN_HELD, round(fraction * n)):
            break
        held_names.append(name)
        held += [i for i, f in enumerate(families) if f == name]
    train = sorted(set(range(n)) - set(held))
    return Split(tuple(sorted(held)), tuple(train), tuple(sorted(held_names)))


def folds(families: Sequence[str], k: int, seed: int) -> list[Split]:
    """``k`` grouped folds over ``families`` (fewer when there are fewer families): each
    family is held out by exactly one fold."""
    names = sorted(set(families))
    random.Random(seed).shuffle(names)
    k = min(k, len(names))
    out = []
    for f in range(k):
        held_names = set(names[f::k])
        held = tuple(i for i, name in enumerate(families) if name in held_names)
        train = tuple(i for i, name in enumerate(families) if name not in held_names)
        out.append(Split(held, train, tuple(sorted(held_names))))
    return out
