"""The energy criterion for decoder-only LMs: which heads, MLP channels and layers to cut.

Every candidate cut has an importance and the joules per token it saves in the run's regime.
A layer's saving is its share of :func:`energyprune.profile_lm`'s per-module split; a width
cut's is re-priced: a copy with one more unit cut in every layer is priced, and each layer is
credited with the difference in its own modules (as the CNN allocator re-prices a marginal
cut). A flat share of the module's energy would credit launch time and static power that a
narrower matrix does not save. Cuts are taken greedily, the
least importance per joule first, until the estimated saving meets the budget; the result is
re-priced for real and the budget tightened if the estimate fell short.

Importance, in one unit across kinds. When the scores carry measured sensitivity
(:mod:`energyprune.pruning.lm_sensitivity`), it is calibration loss: a layer costs the loss
rise of skipping it; an MLP chunk, the rise of masking the layer's weakest half of channels
times the chunk's share of that half's Wanda score (|W| x ||X||); the weakest query head per
group, the rise of masking it. Cuts go no further than the probes did (half the MLP, one head
per group): loss is far from linear beyond them. Without it (ShortGPT-style, the ``depth``
arm): a layer's block influence (1 - cos of its input and output), and a width cut that
influence times its Wanda share of its kind in the layer, times the kind's share of the
layer's parameters (a neutral prior between attention and MLP).

Kinds: ``mlp`` (``round_to`` channels of gate, up and down together), ``heads`` (one query
head from every KV group, GQA-aware), ``layer`` (a whole decoder layer), and storage
(:mod:`.lm_storage`: a layer's weights as ``int8`` / ``int4``, the KV cache as ``kv-int8`` /
``kv-int4``), whose importance is the measured loss rise of storing so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from energyprune.energy.lm.per_token import LMProfile, profile_lm
from energyprune.pruning.decoder import (
    attention_layers,
    decoder_layers,
    drop_layers,
    input_sq_norms,
    prune_mlp_channels,
    prune_query_heads,
    wanda_columns,
)
from energyprune.pruning.hf_config import sync_config
from energyprune.pruning.lm_bits import BITS_KINDS, quantisable, quantise_layers
from energyprune.pruning.lm_kv import KV_KINDS, round_kv
from energyprune.pruning.lm_plan import Cut, LMPlan, LMScores, Price, module_joules, prefix_joules
from energyprune.pruning.lm_storage import STORAGE_KINDS, bits_cuts, kv_cuts, take_storage

__all__ = [
    "BUDGET_SLACK",
    "Cut",
    "LMPlan",
    "LMScores",
    "allocate",
    "apply_plan",
    "cut_to_budget",
    "magnitude_scores",
    "mlp_scores",
    "priced_plan",
    "unit_cuts",
]

#: of dense J/token: how far over a target a cut may price and still meet it
BUDGET_SLACK = 1e-3


def mlp_scores(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, Wanda's |W| x ||X||_2 for each MLP channel: the down projection's input
    norms times its columns' magnitudes."""
    downs = [layer.mlp.down_proj for layer in decoder_layers(model)]
    norms = input_sq_norms(model, downs, batches)
    return [wanda_columns(d, sq) for d, sq in zip(downs, norms, strict=True)]


@torch.no_grad()
def magnitude_scores(model: nn.Module) -> LMScores:
    """L2 magnitude scores (Torch-Pruning's default importance): each MLP channel's gate, up
    and down weights, each query head's q and o weights; no block influence (1 per layer)."""
    mlp, heads = [], []
    for layer, attn in zip(decoder_layers(model), attention_layers(model), strict=True):
        m = layer.mlp
        sq = m.gate_proj.weight.pow(2).sum(1) + m.up_proj.weight.pow(2).sum(1)
        mlp.append((sq + m.down_proj.weight.pow(2).sum(0)).sqrt().float().cpu())
        q = attn.q.weight.pow(2).sum(1) + attn.module.o_proj.weight.pow(2).sum(0)
        heads.append(q.view(-1, attn.head_dim).sum(1).sqrt().float().cpu())
    return LMScores([1.0] * len(mlp), mlp, heads)


ALL_KINDS = ("mlp", "heads", "layer")  # structural cuts; STORAGE_KINDS add formats


def _same_pricing(lm: LMProfile) -> Price:
    """Price a model as ``lm`` was priced (its regime and hardware profile)."""
    builtin = lm.hardware_source == f"{lm.hardware} (built-in)" or not lm.hardware_source
    hardware = lm.hardware if builtin else lm.hardware_source
    return lambda m: profile_lm(m, lm.regime, hardware)


def unit_cuts(
    model: nn.Module,
    lm: LMProfile,
    scores: LMScores,
    round_to: int = 32,
    kinds: tuple[str, ...] = ALL_KINDS,
    price: Price | None = None,
) -> list[Cut]:
    """Every unit cut of ``kinds`` with its importance and estimated J/token saved (width
    cuts re-priced with ``price``, by default as ``lm`` was priced)."""
    price = price or _same_pricing(lm)
    widths = tuple(k for k in kinds if k in ("mlp", "heads"))
    saved = _width_savings(model, lm, scores, round_to, widths, price)
    cuts = [c for c in _unit_cuts(model, lm, scores, round_to, saved) if c.kind in kinds]
    if any(k in BITS_KINDS for k in kinds):
        cuts += bits_cuts(model, lm, scores, price)
    if any(k in KV_KINDS for k in kinds):
        cuts += kv_cuts(model, lm, scores, price)
    return cuts


def _unit_plans(model: nn.Module, round_to: int, kinds: tuple[str, ...]) -> dict[str, LMPlan]:
    """Per width kind, one more unit cut in every layer that has one to spare."""
    plans = {}
    if "mlp" in kinds:
        wide = [
            i
            for i, layer in enumerate(decoder_layers(model))
            if layer.mlp.down_proj.in_features > round_to
        ]
        plans["mlp"] = LMPlan(mlp_cut=dict.fromkeys(wide, 1))
    if "heads" in kinds:
        grouped = [i for i, attn in enumerate(attention_layers(model)) if attn.group_size > 1]
        plans["heads"] = LMPlan(heads_cut=dict.fromkeys(grouped, 1))
    return {kind: plan for kind, plan in plans.items() if plan.mlp_cut or plan.heads_cut}


def _width_savings(
    model: nn.Module,
    lm: LMProfile,
    scores: LMScores,
    round_to: int,
    kinds: tuple[str, ...],
    price: Price,
) -> dict[tuple[str, int], float]:
    """(kind, layer) -> J/token one unit cut of that kind saves in that layer, re-priced: the
    layer's own modules before, minus after, in a copy cut once in every layer (layers price
    independently, so one pricing per kind serves them all)."""
    before = module_joules(lm)
    saved: dict[tuple[str, int], float] = {}
    for kind, plan in _unit_plans(model, round_to, kinds).items():
        cut = copy.deepcopy(model)
        apply_plan(cut, plan, scores, round_to)
        after = module_joules(price(cut))
        for i in {**plan.mlp_cut, **plan.heads_cut}:
            base = f"model.layers.{i}"
            saved[kind, i] = max(prefix_joules(before, base) - prefix_joules(after, base), 0.0)
    return saved


def _shares(layer: nn.Module) -> dict[str, float]:
    mlp = sum(p.numel() for p in layer.mlp.parameters())
    attn = sum(p.numel() for p in layer.self_attn.parameters())
    return {"mlp": mlp / (mlp + attn), "heads": attn / (mlp + attn)}


def _unit_cuts(
    model: nn.Module,
    lm: LMProfile,
    scores: LMScores,
    round_to: int,
    width_j: dict[tuple[str, int], float],
) -> list[Cut]:
    joules = module_joules(lm)
    measured = scores.measured
    cuts: list[Cut] = []
    for i, (layer, attn) in enumerate(
        zip(decoder_layers(model), attention_layers(model), strict=True)
    ):
        base = f"model.layers.{i}"
        ranked = scores.mlp[i].sort().values
        width = len(ranked)
        starts = range(0, width - round_to, round_to)
        chunks = [float(ranked[s : s + round_to].sum()) for s in starts]
        per_group = scores.heads[i].view(attn.kv_heads, attn.group_size).sort(dim=1).values
        parts = [float(per_group[:, j].sum()) for j in range(attn.group_size - 1)]
        if measured:  # loss units, no further than each probe went (loss is not linear)
            layer_cost = measured.layer[i]
            half = float(ranked[: width // 2].sum()) or 1.0
            mlp_costs = [measured.mlp[i] * c / half for c in chunks[: width // 2 // round_to]]
            head_costs = [measured.heads[i]] if parts else []
        else:
            layer_cost, share = max(scores.influence[i], 1e-12), _shares(layer)
            total, head_total = float(ranked.sum()) or 1.0, float(per_group.sum()) or 1.0
            mlp_costs = [layer_cost * share["mlp"] * c / total for c in chunks]
            head_costs = [layer_cost * share["heads"] * p / head_total for p in parts]
        cuts.append(Cut("layer", i, layer_cost, prefix_joules(joules, base)))
        mlp_j, head_j = width_j.get(("mlp", i), 0.0), width_j.get(("heads", i), 0.0)
        cuts += [Cut("mlp", i, cost, mlp_j) for cost in mlp_costs]  # keep at least one chunk
        cuts += [Cut("heads", i, cost, head_j) for cost in head_costs]
    return cuts


def allocate(cuts: list[Cut], saving_j: float) -> LMPlan:
    """Take cuts by least importance per joule until ``saving_j`` J/token are saved; width cuts
    of a dropped layer are skipped (its joules are already saved), and width cuts are taken in
    rank order within their layer (candidates list them so)."""
    plan, saved = LMPlan(), 0.0
    taken: dict[tuple[str, int], int] = {}
    counted: dict[int, float] = {}  # joules of width cuts already counted, per layer
    layers = len({c.layer for c in cuts if c.layer >= 0})
    order = sorted(range(len(cuts)), key=lambda k: cuts[k].importance / max(cuts[k].joules, 1e-18))
    for k in order:
        if saved >= saving_j:
            break
        cut = cuts[k]
        if cut.layer in plan.drop:
            continue
        if cut.kind in STORAGE_KINDS:
            if take_storage(plan, cut):
                counted[cut.layer] = counted.get(cut.layer, 0.0) + cut.joules
                saved += cut.joules
            continue
        if cut.kind == "layer":
            if len(plan.drop) + 1 >= layers:  # one decoder layer always stays
                continue
            plan.drop.append(cut.layer)
            saved += cut.joules - counted.get(cut.layer, 0.0)
            continue
        taken[cut.kind, cut.layer] = taken.get((cut.kind, cut.layer), 0) + 1
        counted[cut.layer] = counted.get(cut.layer, 0.0) + cut.joules
        saved += cut.joules
    for (kind, layer), n in taken.items():
        if layer not in plan.drop:
            (plan.mlp_cut if kind == "mlp" else plan.heads_cut)[layer] = n
    plan.bits = {i: dtype for i, dtype in plan.bits.items() if i not in plan.drop}
    return plan


def apply_plan(model: nn.Module, plan: LMPlan, scores: LMScores, round_to: int = 32) -> None:
    """Cut ``model`` in place as ``plan`` says; the config is synced after."""
    for i, layer in enumerate(decoder_layers(model)):
        removed = plan.mlp_cut.get(i, 0) * round_to
        if removed:
            keep = scores.mlp[i].argsort(descending=True)[
                : layer.mlp.down_proj.in_features - removed
            ]
            prune_mlp_channels(layer.mlp, keep.sort().values)
    for i, attn in enumerate(attention_layers(model)):
        removed = plan.heads_cut.get(i, 0)
        if removed:
            prune_query_heads(attn, attn.group_size - removed, scores.heads[i])
    if plan.drop:
        drop_layers(model, plan.drop)
    kept = [i for i in range(len(decoder_layers(model)) + len(plan.drop)) if i not in plan.drop]
    layers = decoder_layers(model)
    stored = {kept.index(i): dtype for i, dtype in plan.bits.items() if i in kept}
    stored = {i: dtype for i, dtype in stored.items() if quantisable(layers[i])}
    if stored:  # the layers' indices after the drop
        quantise_layers(model, stored)
    if plan.kv:
        round_kv(model, plan.kv)
    sync_config(model)


def priced_plan(
    dense: nn.Module,
    plan: LMPlan,
    scores: LMScores,
    round_to: int,
    price: Callable[[nn.Module], LMProfile],
    dense_j: float,
) -> tuple[nn.Module, float]:
    """A copy of ``dense`` cut by ``plan`` and its priced J/token over dense's."""
    model = copy.deepcopy(dense)
    apply_plan(model, plan, scores, round_to)
    return model, price(model).energy_j / dense_j


def cut_to_budget(
    dense: nn.Module,
    scores: LMScores,
    target: float,
    price: Callable[[nn.Module], LMProfile],
    round_to: int = 32,
    tries: int = 4,
    kinds: tuple[str, ...] = ALL_KINDS,
) -> tuple[nn.Module, LMPlan, float]:
    """A pruned copy of ``dense`` at ``target`` x its J/token (re-priced, not estimated): the
    saving asked of the allocator grows until the priced ratio meets the target."""
    lm = price(dense)
    cuts = unit_cuts(dense, lm, scores, round_to, kinds, price)
    ask = (1 - target) * lm.energy_j
    for _ in range(tries):
        plan = allocate(cuts, ask)
        model, ratio = priced_plan(dense, plan, scores, round_to, price, lm.energy_j)
        if ratio <= target + BUDGET_SLACK:
            return model, plan, ratio
        ask *= (1 - target) / max(1 - ratio, 1e-3)  # the estimate fell short by this much
    return model, plan, ratio
