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

Savings are linear estimates; the caller re-traces after each round and allocates again if the
estimate is still above target.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from energyprune.energy.model import EnergyProfile
from energyprune.errors import ConfigError
from energyprune.pruning.groups import ChannelGroup

__all__ = ["STRATEGIES", "Candidate", "allocate", "channel_savings"]

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


def channel_savings(prof: EnergyProfile, groups: Iterable[ChannelGroup]) -> list[float]:
    """Estimated joules saved per removed channel of each group.

    A member module's own ops scale with the pruned dimension, so each channel saves
    ``E(module) / width``. Ops without parameters (activations, residual adds, pooling) are
    charged to the last module with parameters that ran before them: they process its output
    channels, so they count for groups that remove that module's outputs. The estimate is
    linear; the caller re-traces after each round and corrects for the rest.
    """
    own: dict[str, float] = {}
    attached: dict[str, float] = {}
    producer = ""
    for op in prof.ops:
        module = op.record.module
        if any(o.role == "param" for o in op.record.operands):
            producer = module
            own[module] = own.get(module, 0.0) + op.energy_j
        else:
            attached[producer] = attached.get(producer, 0.0) + op.energy_j
    savings = []
    for g in groups:
        total = sum(own.get(m, 0.0) for m in g.members)
        total += sum(attached.get(m, 0.0) for m in g.out_members)
        savings.append(total / max(g.channels, 1))
    return savings


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


def allocate(
    candidates: list[Candidate], need_j: float, criterion: str, strategy: str = "global"
) -> tuple[dict[str, list[int]], float]:
    """Channels to remove per group root so estimated savings reach ``need_j`` joules.

    Returns the removal and its estimated saving (J).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}': choose one of {', '.join(STRATEGIES)}")
    removal: dict[str, list[int]] = {}
    saved = 0.0
    steps = [_steps(c) for c in candidates]
    if strategy == "layerwise-energy":
        order = sorted(
            range(len(candidates)),
            key=lambda i: -candidates[i].saving_j * candidates[i].group.channels,
        )
        for i in order:
            for _, channels, _, saving in steps[i]:
                if saved >= need_j:
                    return removal, saved
                removal.setdefault(candidates[i].group.root, []).extend(channels)
                saved += saving
        return removal, saved
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
    while heap and saved < need_j:
        _, i, channels, saving = heapq.heappop(heap)
        removal.setdefault(candidates[i].group.root, []).extend(channels)
        saved += saving
        push(i)
    return removal, saved
