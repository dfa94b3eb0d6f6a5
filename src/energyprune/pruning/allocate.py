"""Energy-budget allocation (policy): which channels to remove so the estimate meets a target.

Each group offers *steps*: removing its least important channels down to the next allowed width
(a multiple of ``round_to`` channels, or whole attention heads), never below its minimum width.
A step's cost is the importance it removes and its benefit the energy it saves (from the trace:
the group's modules' estimated energy per channel). Strategies:

* ``global`` (default): greedy over all groups' next steps by cost per benefit — for the
  ``energy`` criterion importance per joule saved, for the others mean importance per channel
  removed (Torch-Pruning's global ranking) — until the savings cover the gap;
* ``layerwise-energy``: Yang et al. (CVPR 2017): groups in order of their energy, each pruned
  as far as allowed before the next.

Savings are linear estimates that only rank the steps; the caller prices prefixes of the order
with the traced ops resized (energy/rescale.py) to pick how far to go.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from energyprune.energy.model import EnergyProfile
from energyprune.energy.rescale import channel_dim
from energyprune.errors import ConfigError
from energyprune.pruning.groups import ChannelGroup

__all__ = ["STRATEGIES", "Candidate", "Step", "channel_savings", "order", "removal"]

STRATEGIES = ("global", "layerwise-energy")


@dataclass(frozen=True)
class Candidate:
    """A group with its per-unit importance and energy saving per channel (J)."""

    group: ChannelGroup
    scores: torch.Tensor  # per channel, current width
    saving_j: float  # per channel
    min_width: int
    multiple: int  # allowed widths are multiples of this (in channels)

    def unit_order(self) -> list[int]:
        """Units (heads or channels) from least to most important."""
        return torch.argsort(self.group.per_unit(self.scores), stable=True).tolist()

    def widths(self) -> list[int]:
        """Allowed widths below the current one, widest first."""
        unit, width = self.group.unit, self.group.channels
        step = max(unit, math.lcm(unit, self.multiple))
        out = []
        w = (width - 1) // step * step
        while w >= self.min_width and w > 0:
            out.append(w)
            w -= step
        return out


def channel_savings(
    prof: EnergyProfile, groups: Iterable[ChannelGroup], width: Callable[[str, bool], int]
) -> list[float]:
    """Estimated joules saved per removed channel of each group.

    A member's own ops scale with the dimension the group shrinks, so one group channel saves
    ``E(member) × per_channel / width(member, dimension)``: a layer reading a concatenation of
    many groups gives each of them only its share. Ops without parameters (norm-free
    activations, residual adds, pooling, concatenations) are charged to the last module with
    parameters that ran before them, per channel of their own output: they count for groups
    that remove that module's outputs. ``width(name, out)`` gives a module's current channels.
    The estimate is linear; the caller re-prices after each round and corrects for the rest.
    """
    own: dict[str, float] = {}
    attached: dict[str, float] = {}  # joules per output channel of the producer's followers
    producer = ""
    for op in prof.ops:
        module = op.record.module
        if any(o.role == "param" for o in op.record.operands):
            producer = module
            own[module] = own.get(module, 0.0) + op.energy_j
        elif op.record.output_shapes:
            per = op.energy_j / _channels(op.record.output_shapes[0])
            attached[producer] = attached.get(producer, 0.0) + per
    savings = []
    for g in groups:
        total = 0.0
        for m in g.members:
            total += own.get(m.name, 0.0) * m.per_channel / max(width(m.name, m.out), 1)
            if m.out:
                total += attached.get(m.name, 0.0) * m.per_channel
        savings.append(total)
    return savings


def _channels(shape: tuple[int, ...]) -> int:
    return max(shape[channel_dim(shape)], 1) if shape else 1


def _steps(c: Candidate):
    order = c.unit_order()
    unit = c.group.unit
    scores = c.scores
    removed_units = 0
    for width in c.widths():
        n_units = c.group.units - width // unit
        units = order[removed_units:n_units]
        channels = [ch for u in units for ch in c.group.unit_channels(u)]
        yield width, channels, float(scores[channels].sum()), len(channels) * c.saving_j
        removed_units = n_units


@dataclass(frozen=True)
class Step:
    """Removing ``channels`` (positions at the current width) of group ``root``."""

    root: str
    channels: list[int]
    saving_j: float  # linear estimate


def order(candidates: list[Candidate], criterion: str, strategy: str = "global") -> Iterator[Step]:
    """Every allowed step of every group, lazily, in the order ``strategy`` takes them: the
    caller takes the shortest prefix that meets its budget."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}': choose one of {', '.join(STRATEGIES)}")
    steps = [_steps(c) for c in candidates]
    if strategy == "layerwise-energy":
        by_energy = sorted(
            range(len(candidates)),
            key=lambda i: -candidates[i].saving_j * candidates[i].group.channels,
        )
        for i in by_energy:
            for _, channels, _, saving in steps[i]:
                yield Step(candidates[i].group.root, channels, saving)
        return
    heap: list[tuple[float, int, list[int], float]] = []

    def push(i: int) -> None:
        step = next(steps[i], None)
        if step is None:
            return
        _, channels, importance, saving = step
        if criterion == "energy":
            key = importance / saving if saving > 0 else math.inf
        else:
            key = importance / len(channels)
        heapq.heappush(heap, (key, i, channels, saving))

    for i in range(len(candidates)):
        push(i)
    while heap:
        _, i, channels, saving = heapq.heappop(heap)
        yield Step(candidates[i].group.root, channels, saving)
        push(i)


def removal(steps: Iterable[Step]) -> dict[str, list[int]]:
    """Channels to remove per group root for ``steps``."""
    out: dict[str, list[int]] = {}
    for step in steps:
        out.setdefault(step.root, []).extend(step.channels)
    return out
