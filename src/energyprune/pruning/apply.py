"""``energyprune.prune``: prune a model to an estimated-energy budget.

Channel pruning: price the model, order every group's steps by importance per joule with
savings that follow the steps taken (allocate.py), take the shortest prefix whose re-priced
estimate meets the target (energy/pricing/rescale.py), remove it physically (groups.py) and trace
the result; another round only if that falls short. Unstructured and N:M live in sparse.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.energy.pricing.estimates import EnergyProfile, profile
from energyprune.energy.tracing.tensors import tensors_in
from energyprune.errors import ConfigError
from energyprune.models.layers import folded_copy, layer_widths
from energyprune.options import build
from energyprune.pruning.allocate import (
    GroupOption,
    Savings,
    order,
    removal,
    shortest_removal,
)
from energyprune.pruning.groups import Structure
from energyprune.pruning.hf_config import sync_config
from energyprune.pruning.importance import CRITERIA, make_importance, taylor_gradients
from energyprune.pruning.plan import PruningPlan
from energyprune.pruning.select import select_modules
from energyprune.pruning.sparse import shapes_pay
from energyprune.pruning.spec import GRANULARITIES, PruneSpec
from energyprune.pruning.tracing import TRACE_SECONDS

__all__ = ["GRANULARITIES", "PruneResult", "PruneSpec", "prune", "select_modules"]

TOLERANCE = 0.01  # achieved estimate may exceed the target by at most 1 %
MAX_ROUNDS = 8


@dataclass
class PruneResult:
    """A pruned model, its plan, and estimated energy profiles before and after."""

    model: nn.Module
    plan: PruningPlan
    before: EnergyProfile
    after: EnergyProfile

    @property
    def energy_ratio(self) -> float:
        """Estimated energy after / before."""
        return self.after.total.energy_j / self.before.total.energy_j


@dataclass(frozen=True)
class Caps:
    """Most of a group's channels that may go: per module-name prefix, else the default."""

    default: float
    by_prefix: tuple[tuple[str, float], ...] = ()

    def for_root(self, root: str) -> float:
        for prefix, cap in self.by_prefix:
            if root == prefix or root.startswith(prefix + "."):
                return cap
        return self.default


@dataclass(frozen=True)
class _CutSettings:
    """The settings of one channel prune, shared by every round."""

    hw: HardwareProfile
    dtype: str | None
    name: str
    criterion: str
    strategy: str
    round_to: int
    caps: Caps
    ignored: tuple
    prune_residual: bool
    data: Any = None
    trace_seconds: float = TRACE_SECONDS
    shapes_only: bool = True  # price rounds on fake tensors (see sparse.shapes_pay)

    def price(self, model: nn.Module, example: Any) -> EnergyProfile:
        return profile(
            model, example, self.hw, self.dtype, name=self.name, shapes_only=self.shapes_only
        )


@dataclass
class _TracedGraph:
    """What the rounds carry from one to the next: the parts traced when the whole model did
    not, and the latest estimate (given in, handed back: no round prices a model twice)."""

    parts: list[str] | None = None
    error: str | None = None
    energy: EnergyProfile | None = None


def _candidates(
    structure: Structure,
    prof: EnergyProfile,
    job: _CutSettings,
    dense_widths: dict[str, int],
    example: Any,
) -> tuple[list[GroupOption], Savings]:
    """Every group scored afresh on the model as it is now, with its floor and saving."""
    if CRITERIA[job.criterion].needs_gradients:
        taylor_gradients(structure.model, example, job.data)
    importance = make_importance(job.criterion)
    groups = structure.groups
    savings = Savings(prof, groups, structure.width)
    out = []
    for i, group in enumerate(groups):
        saving = savings.now(i)
        original = dense_widths.get(group.root, group.channels)
        floor = max(group.min_width, round(original * (1 - job.caps.for_root(group.root))), 1)
        floor = -(-floor // group.unit) * group.unit
        scores = structure.importance(group, importance)
        out.append(GroupOption(group, scores, saving, floor, job.round_to))
    return out, savings


def _channel_rounds(
    model: nn.Module,
    example: Any,
    target_j: float,
    job: _CutSettings,
    traced: _TracedGraph | None = None,
) -> list[list[dict]]:
    traced = _TracedGraph() if traced is None else traced
    dense_widths = {n: w[1] for n, w in layer_widths(model).items()}
    rounds: list[list[dict]] = []
    energy = traced.energy or job.price(model, example)
    structure: Structure | None = None  # traced once; removals shrink its groups in place
    for _ in range(MAX_ROUNDS):  # one, unless the traced result falls short of the target
        if energy.total.energy_j <= target_j:
            break
        if structure is None:
            ignored = select_modules(model, job.ignored)
            structure = Structure(
                model, example, ignored, job.prune_residual, traced.parts, job.trace_seconds
            )
        traced.parts = structure.parts
        traced.error = traced.error or structure.whole_model_error
        cands, savings = _candidates(structure, energy, job, dense_widths, example)
        steps = order(cands, job.criterion, job.strategy, savings)
        cut = removal(shortest_removal(steps, structure, energy, target_j, job.hw, job.dtype))
        if not cut:
            break
        rounds.append(
            [
                {"root": root, "removed": sorted(idxs), "members": structure.remove(root, idxs)}
                for root, idxs in cut.items()
            ]
        )
        model.zero_grad(set_to_none=True)
        energy = job.price(model, example)
    traced.energy = energy
    return rounds


def _reachable_minimum(model: nn.Module, example: Any, job: _CutSettings) -> float:
    """Estimated energy with every allowed group pruned as far as allowed."""
    probe = folded_copy(model)
    _channel_rounds(probe, example, 0.0, replace(job, criterion="l2", strategy="global"))
    return job.price(probe, example).total.energy_j


def prune(
    model: nn.Module,
    example_inputs: Any,
    target_energy: float | None = None,
    *,
    spec: PruneSpec | None = None,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    name: str | None = None,
    trace_seconds: float = TRACE_SECONDS,
    **settings: Any,
) -> PruneResult:
    """Prune a copy of ``model`` so its estimated energy meets the target.

    Args:
        model: the dense model (left untouched; a pruned copy is returned).
        example_inputs: a tensor, tuple or dict of inputs (as for :func:`energyprune.profile`).
        target_energy: fraction of the dense estimate to reach (default 0.5); or give
            ``max_joules``.
        spec: a :class:`PruneSpec` to start from (``plan.spec`` of an earlier run); the
            keyword settings replace its fields.
        data: labelled batches for ``taylor`` (without them a data-free proxy is used).
        name: the model's name in the plan and the report.
        trace_seconds: time limit for Torch-Pruning to trace the whole model; past it (or on
            a tracer error) the model is traced part by part and only channels inside parts
            are pruned (``plan.traced_parts``).
        settings: the fields of :class:`PruneSpec`, each declared and checked there:
            ``granularity`` (``channel``, ``nm``, ``unstructured``), ``criterion`` (``energy``
            is importance per joule), ``strategy``, ``hardware`` (its ``channel_multiple`` is
            the default ``round_to``), ``dtype``, ``round_to``, ``max_layer_ratio``,
            ``layer_caps`` (per module-name prefix, e.g. ``{"layer1": 0.3}``),
            ``ignored_layers`` (modules, names, ``"re:<regex>"`` or types), ``prune_residual``,
            ``nm`` ((N, M) kept in every M weights), ``sparsity_scope``, ``max_joules``.

    Raises:
        ConfigError: bad or unknown settings, or a target below the reachable minimum (named
            in the message).
    """
    return _prune(
        model, example_inputs, _spec(spec, target_energy, settings), data, name, trace_seconds
    )


def _spec(
    base: PruneSpec | None, target_energy: float | None, settings: dict[str, Any]
) -> PruneSpec:
    """One spec from a base and keywords; naming one target (fraction or joules) drops the
    base's other, naming both is refused, and with neither the fraction is 0.5."""
    if target_energy is not None:  # both named: the spec refuses them
        settings = {"max_joules": None, **settings, "target_energy": target_energy}
    elif settings.get("max_joules") is not None and "target_energy" not in settings:
        settings = {**settings, "target_energy": None}
    if "layer_caps" in settings:
        settings["layer_caps"] = tuple(dict(settings["layer_caps"] or {}).items())
    return build(PruneSpec, base, **settings)


def _prune(model, example_inputs, spec: PruneSpec, data, name, trace_seconds) -> PruneResult:
    hw = load_hardware(spec.hardware)
    name = name or type(model).__name__
    round_to = hw.channel_multiple if spec.round_to is None else spec.round_to
    was_training = model.training
    names = {m: n for n, m in model.named_modules()}
    ignored = tuple(names.get(s, s) if isinstance(s, nn.Module) else s for s in spec.ignored_layers)
    work = folded_copy(model).eval()
    before = profile(work, example_inputs, hw, spec.dtype, name=name)
    dense_j = before.total.energy_j
    target_j = spec.target_energy * dense_j if spec.target_energy else float(spec.max_joules)
    plan = PruningPlan(
        granularity=spec.granularity,
        criterion=spec.criterion,
        strategy=spec.strategy,
        hardware=hw.name,
        round_to=round_to,
        target_energy=spec.target_energy,
        dense_j=dense_j,
        target_j=target_j,
    )
    plan.spec = spec.to_dict()
    first = next(iter(tensors_in(example_inputs)), None)
    if first is not None:
        plan.input_shape, plan.input_dtype = list(first.shape), str(first.dtype).split(".")[-1]
    caps = Caps(spec.max_layer_ratio, spec.layer_caps)
    job = _CutSettings(
        hw=hw,
        dtype=spec.dtype,
        name=name,
        criterion=spec.criterion,
        strategy=spec.strategy,
        round_to=round_to,
        caps=caps,
        ignored=ignored,
        prune_residual=spec.prune_residual,
        data=data,
        trace_seconds=trace_seconds,
        shapes_only=shapes_pay(before),
    )
    after = _cut(work, example_inputs, plan, spec, job, target_j, before)
    if after.total.energy_j > target_j * (1 + TOLERANCE):
        reachable = (
            _reachable_minimum(model, example_inputs, job)
            if plan.granularity == "channel"
            else after.total.energy_j
        )
        raise ConfigError(
            f"target {target_j:.4g} J ({target_j / dense_j:.1%} of dense) is "
            f"unreachable with {plan.granularity} pruning under {hw.name}: the reachable "
            f"minimum is about {reachable:.4g} J ({reachable / dense_j:.1%} of dense) with "
            f"max_layer_ratio {spec.max_layer_ratio} and the ignored layers; raise the target "
            "or allow more pruning"
        )
    plan.achieved_j = after.total.energy_j
    plan.widths = layer_widths(work)
    sync_config(work)
    work.train(was_training)
    return PruneResult(work, plan, before, after)


def _cut(
    work, example, plan, spec: PruneSpec, job: _CutSettings, target_j, before
) -> EnergyProfile:
    """Prune ``work`` in place at the spec's granularity; its estimate after."""
    return _CUTS[spec.granularity](work, example, plan, spec, job, target_j, before)


def _masked_cut(work, example, plan, spec: PruneSpec, job: _CutSettings, target_j, before):
    _sparsify(work, example, plan, spec.granularity, job, target_j, spec)
    return job.price(work, example)


def _channel_cut(work, example, plan, spec: PruneSpec, job: _CutSettings, target_j, before):
    traced = _TracedGraph(energy=before)
    plan.rounds = _channel_rounds(work, example, target_j, job, traced)
    plan.traced_parts = traced.parts
    after = traced.energy
    if traced.parts is not None and after.total.energy_j > target_j * (1 + TOLERANCE):
        reached = after.total.energy_j / before.total.energy_j
        note = _fallback(plan, traced, reached, job.hw, job.name)
        _sparsify(work, example, plan, "unstructured", job, target_j, spec)
        logging.getLogger("energyprune").warning(note)
        after = job.price(work, example)
    return after


#: granularity (spec.GRANULARITIES) → how ``prune`` cuts at it
_CUTS = {"channel": _channel_cut, "nm": _masked_cut, "unstructured": _masked_cut}


def _fallback(
    plan: PruningPlan, traced: _TracedGraph, reached: float, hw: HardwareProfile, name: str
) -> str:
    """Mark ``plan`` for unstructured pruning on top of the channels already removed, and say
    why in one line; or, where unstructured sparsity saves no energy on ``hw``, refuse with the
    figures."""
    why = (
        f"{name} does not trace whole for channel pruning ({traced.error}); channels inside its "
        f"{len(traced.parts or [])} traceable parts and between its blocks reach about "
        f"{reached:.1%} of dense"
    )
    if not hw.zero_skipping:
        raise ConfigError(
            f"{why} under {hw.name}, which does not skip zeros: raise the target above that, or "
            "price on a zero-skipping profile (--hardware eyeriss-65nm), where the rest is pruned "
            "unstructured"
        )
    plan.granularity = "unstructured"  # the channel rounds stay: replay removes them first
    note = f"{why}, so the rest is pruned unstructured on top (energy priced as sparse weights)"
    plan.notes.append(note)
    return note


def _sparsify(
    work: nn.Module,
    example: Any,
    plan: PruningPlan,
    granularity: str,
    job: _CutSettings,
    target_j: float,
    spec: PruneSpec,
) -> None:
    """Mask ``work`` to ``target_j`` (unstructured or N:M); the masks go into ``plan``."""
    from energyprune.pruning.sparse import Sparsity, sparsify

    how = Sparsity(
        granularity=granularity,
        nm=spec.nm,
        max_ratio=spec.max_layer_ratio,
        scope=spec.sparsity_scope,
        dtype=job.dtype,
        name=job.name,
    )
    ignored = select_modules(work, job.ignored)
    plan.masks, plan.target_sparsity = sparsify(work, example, job.hw, target_j, ignored, how)
