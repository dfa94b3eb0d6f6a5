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

Savings are linear estimates that only rank the steps; :func:`shortest_removal` prices
prefixes of the order with the traced ops resized (energy/pricing/rescale.py) to pick how far to go.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.estimates import EnergyProfile
from energyprune.energy.pricing.rescale import channel_dim, rescaled_energy
from energyprune.errors import ConfigError
from energyprune.pruning.groups import ChannelGroup, Structure
from energyprune.pruning.importance import CRITERIA

__all__ = [
    "STRATEGIES",
    "GroupOption",
    "Savings",
    "Step",
    "channel_savings",
    "order",
    "removal",
    "shortest_removal",
]


@dataclass(frozen=True)
class GroupOption:
    """A group with its per-unit importance and energy saving per channel (J)."""

    group: ChannelGroup
    scores: torch.Tensor  # per channel, current width
    saving_j: float  # per channel
    min_width: int
    multiple: int  # allowed widths are multiples of this (in channels)

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


class Savings:
    """Estimated joules saved per removed channel of each group, kept current as an order takes
    steps.

    A member's own ops scale with the dimension the group shrinks, so one group channel saves
    ``E(member) × per_channel / width(member, dimension)``: a layer reading a concatenation of
    many groups gives each of them only its share. The same ops also scale with the member's
    *other* dimension, so a step that cuts a layer's inputs lowers what cutting its outputs
    saves (``take``): without that, the joules of a layer whose inputs and outputs are both cut
    count twice, and importance per joule over-prunes it. Ops without parameters (norm-free
    activations, residual adds, pooling, concatenations) are charged to the last module with
    parameters that ran before them, per channel of their own output: they count for groups
    that remove that module's outputs. ``width(name, out)`` gives a module's current channels.
    The estimate is linear; the caller re-prices proposals exactly.
    """

    def __init__(
        self,
        prof: EnergyProfile,
        groups: Sequence[ChannelGroup],
        width: Callable[[str, bool], int],
    ) -> None:
        own, attached = _energies(prof)
        self.dense_width: dict[tuple[str, bool], int] = {}
        self.width: dict[tuple[str, bool], float] = {}
        self.scaled_j: list[
            list[tuple[float, tuple[str, bool]]]
        ] = []  # per group: (J, the other dimension it scales with)
        self.attached_j: list[float] = []  # per group: joules of parameter-free ops after it
        self.dependents: dict[tuple[str, bool], list[int]] = {}
        for i, g in enumerate(groups):
            terms, fixed = [], 0.0
            for m in g.members:
                for dim in (m.out, not m.out):
                    if (m.name, dim) not in self.dense_width:
                        self.dense_width[(m.name, dim)] = max(width(m.name, dim), 1)
                        self.width[(m.name, dim)] = float(self.dense_width[(m.name, dim)])
                base = own.get(m.name, 0.0) * m.per_channel / self.dense_width[(m.name, m.out)]
                terms.append((base, (m.name, not m.out)))
                self.dependents.setdefault((m.name, not m.out), []).append(i)
                if m.out:
                    fixed += attached.get(m.name, 0.0) * m.per_channel
            self.scaled_j.append(terms)
            self.attached_j.append(fixed)
        self.groups = groups

    def now(self, i: int) -> float:
        """Joules per channel of group ``i`` after the steps taken so far."""
        live = sum(j * self.width[other] / self.dense_width[other] for j, other in self.scaled_j[i])
        return live + self.attached_j[i]

    def take(self, i: int, channels: int) -> set[int]:
        """Record removing ``channels`` of group ``i``; the groups whose saving changed."""
        changed: set[int] = set()
        for m in self.groups[i].members:
            key = (m.name, m.out)
            self.width[key] = max(self.width[key] - channels * m.per_channel, 0.0)
            changed.update(self.dependents.get(key, ()))
        return changed


def channel_savings(
    prof: EnergyProfile, groups: Sequence[ChannelGroup], width: Callable[[str, bool], int]
) -> list[float]:
    """Joules saved per removed channel of each group before any step (:class:`Savings`)."""
    savings = Savings(prof, groups, width)
    return [savings.now(i) for i in range(len(groups))]


def _energies(prof: EnergyProfile) -> tuple[dict[str, float], dict[str, float]]:
    """Each module's own joules, and the joules per output channel of the parameter-free ops
    that follow it."""
    own: dict[str, float] = {}
    attached: dict[str, float] = {}
    producer = ""
    for op in prof.ops:
        module = op.record.module
        if any(o.role == "param" for o in op.record.operands):
            producer = module
            own[module] = own.get(module, 0.0) + op.energy_j
        elif op.record.output_shapes:
            per = op.energy_j / _channels(op.record.output_shapes[0])
            attached[producer] = attached.get(producer, 0.0) + per
    return own, attached


def _channels(shape: tuple[int, ...]) -> int:
    return max(shape[channel_dim(shape)], 1) if shape else 1


def _steps(c: GroupOption) -> Iterator[tuple[list[int], float]]:
    """The group's steps, narrowest cut first: (channels removed, importance removed)."""
    per_unit = c.group.per_unit(c.scores)
    ranked = torch.argsort(per_unit, stable=True).tolist()  # least important unit first
    values = per_unit.tolist()
    removed = 0
    for width in c.widths():
        n_units = c.group.units - width // c.group.unit
        units = ranked[removed:n_units]
        channels = [ch for u in units for ch in c.group.unit_channels(u)]
        yield channels, sum(values[u] for u in units)
        removed = n_units


@dataclass(frozen=True)
class Step:
    """Removing ``channels`` (positions at the current width) of group ``root``."""

    root: str
    channels: list[int]
    saving_j: float  # linear estimate


def order(
    candidates: list[GroupOption],
    criterion: str,
    strategy: str = "global",
    savings: Savings | None = None,
) -> Iterator[Step]:
    """Every allowed step of every group, lazily, in the order ``strategy`` takes them: the
    caller takes the shortest prefix that meets its budget. With ``savings`` (candidates in its
    groups' order) each step's saving follows the steps taken before it."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}': choose one of {', '.join(STRATEGIES)}")
    steps = [_steps(c) for c in candidates]
    yield from STRATEGIES[strategy](candidates, steps, criterion, savings)


def _layerwise(candidates, steps, criterion: str, savings: Savings | None) -> Iterator[Step]:
    """Yang et al.: groups in order of their energy, each pruned as far as allowed first."""
    by_energy = sorted(
        range(len(candidates)),
        key=lambda i: -candidates[i].saving_j * candidates[i].group.channels,
    )
    for i in by_energy:
        for channels, _ in steps[i]:
            yield Step(candidates[i].group.root, channels, len(channels) * candidates[i].saving_j)


def _greedy(candidates, steps, criterion: str, savings: Savings | None) -> Iterator[Step]:
    """Lowest cost per benefit first. Savings only fall as neighbours shrink, so a popped step
    whose group's saving changed since it was pushed is re-keyed and pushed back (lazy greedy)."""
    pending: list[tuple | None] = [None] * len(candidates)
    version = [0] * len(candidates)
    heap: list[tuple[float, int, int]] = []

    def per_channel(i: int) -> float:
        return savings.now(i) if savings is not None else candidates[i].saving_j

    def key(i: int) -> float:
        channels, importance = pending[i]
        if not CRITERIA[criterion].per_joule:
            return importance / len(channels)
        saving = len(channels) * per_channel(i)
        return importance / saving if saving > 0 else math.inf

    def push(i: int) -> None:
        pending[i] = next(steps[i], None)
        version[i] += 1
        if pending[i] is not None:
            heapq.heappush(heap, (key(i), i, version[i]))

    for i in range(len(candidates)):
        push(i)
    while heap:
        _, i, v = heapq.heappop(heap)
        if v != version[i]:  # its saving changed: re-key
            heapq.heappush(heap, (key(i), i, version[i]))
            continue
        channels = pending[i][0]
        yield Step(candidates[i].group.root, channels, len(channels) * per_channel(i))
        if savings is not None:
            for j in savings.take(i, len(channels)):
                version[j] += 1
        push(i)


#: strategy name → the order it takes steps in
STRATEGIES: dict[str, Callable[..., Iterator[Step]]] = {
    "global": _greedy,
    "layerwise-energy": _layerwise,
}


def removal(steps: Iterable[Step]) -> dict[str, list[int]]:
    """Channels to remove per group root for ``steps``."""
    out: dict[str, list[int]] = {}
    for step in steps:
        out.setdefault(step.root, []).extend(step.channels)
    return out


class _PricedPrefixes:
    """Prefixes of the greedy order, priced by resizing the traced ops (energy/pricing/rescale.py:
    no forward pass), steps drawn from the lazy order only as far as needed."""

    LOOKAHEAD = 256  # later steps searched for a smaller last step
    TRIES = 6  # of which at most this many are priced

    def __init__(
        self,
        steps: Iterator[Step],
        structure: Structure,
        energy: EnergyProfile,
        hw: HardwareProfile,
        dtype: str | None,
    ) -> None:
        self.steps, self.structure, self.energy = steps, structure, energy
        self.hw, self.dtype = hw, dtype
        self.taken: list[Step] = []

    def price(self, steps: list[Step]) -> float:
        resized = self.structure.resizes(removal(steps))
        return rescaled_energy(self.energy, resized, self.hw, self.dtype)

    def shortest(self, target_j: float) -> int:
        """Length of the shortest prefix meeting ``target_j`` (all steps when none does). Steps
        are drawn until their linear savings cover the gap, then twice that, ...; a bisection
        then finds the prefix."""
        need, saved, lo = self.energy.total.energy_j - target_j, 0.0, 0
        while True:
            for step in self.steps:
                self.taken.append(step)
                saved += step.saving_j
                if saved >= need:
                    break
            if not self.taken or self.price(self.taken) <= target_j:
                break
            if saved < need:  # every step taken, target still not met
                return len(self.taken)
            lo, need = len(self.taken), 2 * need
        hi = len(self.taken)
        while lo + 1 < hi:  # price(lo) > target (or lo = 0), price(hi) <= target
            mid = (lo + hi) // 2
            if self.price(self.taken[:mid]) <= target_j:
                hi = mid
            else:
                lo = mid
        return hi

    def with_smallest_last_step(self, n: int, target_j: float) -> list[Step]:
        """The first ``n`` steps, the last one swapped for the smallest later step that still
        meets the target: one step can be a position in every channel group of a wide layer,
        or ``round_to`` channels at high resolution, and overshoot by several percent."""
        if not n:
            return []
        base, last = self.taken[: n - 1], self.taken[n - 1]
        need = self.price(base) - target_j
        if need <= 0:
            return self.taken[:n]
        for step in self.steps:  # draw the lookahead
            self.taken.append(step)
            if len(self.taken) >= n + self.LOOKAHEAD:
                break
        seen, options = {last.root}, []
        for step in self.taken[n:]:  # a group's later steps need its earlier ones
            if step.root not in seen and need / 2 <= step.saving_j < last.saving_j:
                options.append(step)
            seen.add(step.root)
        for step in sorted(options, key=lambda s: s.saving_j)[: self.TRIES]:
            if self.price([*base, step]) <= target_j:
                return [*base, step]
        return self.taken[:n]


def shortest_removal(
    steps: Iterator[Step],
    structure: Structure,
    energy: EnergyProfile,
    target_j: float,
    hw: HardwareProfile,
    dtype: str | None,
) -> list[Step]:
    """The removal of a round: the shortest prefix of ``steps`` meeting ``target_j`` on the
    re-priced estimate, its last step made as small as the target allows."""
    proposals = _PricedPrefixes(steps, structure, energy, hw, dtype)
    return proposals.with_smallest_last_step(proposals.shortest(target_j), target_j)
