"""The cut methods of a decoder LM: how a model is cut to a J/token target (the LM kind's
``step`` calls one). ``energy`` (the default) mixes heads, MLP channels and layers by measured
importance per joule and keeps the best of several budget-meeting plans; ``depth``, ``width``,
``torch-pruning`` (Torch-Pruning's own LLM recipe) and the Wanda sparsity arms are the
baselines. Every method takes ``(dense, data, scores, price, cfg, on_probe)`` and returns an
:class:`LMCut`; ``cfg`` is the LM options
(:class:`~energyprune.pipeline.lm_prune.LMPruneConfig`).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from energyprune.pipeline.recover import state_digest
from energyprune.pipeline.text import TextData, perplexity
from energyprune.pruning.decoder import block_influence, decoder_layers, group_importance
from energyprune.pruning.lm_allocate import (
    ALL_KINDS,
    BUDGET_SLACK,
    LMPlan,
    LMScores,
    cut_to_budget,
    mlp_scores,
    priced_plan,
)
from energyprune.pruning.lm_bits import (
    BITS_KINDS,
    bits_sensitivity,
    quantisable,
    quantise_layers,
)
from energyprune.pruning.lm_kv import KV_KINDS, kv_roundable, kv_sensitivity
from energyprune.pruning.lm_sensitivity import Sensitivity, greedy_layers, loss_sensitivity
from energyprune.pruning.lm_storage import STORAGE_KINDS
from energyprune.pruning.tp_llm import tp_llm_to_budget
from energyprune.pruning.wanda import wanda_prune

__all__ = ["ENERGY_CANDIDATES", "GREEDY", "METHODS", "LMCut", "calibration_scores", "stored_greedy"]


@dataclass(frozen=True)
class LMCut:
    """What a cut method made: the model, its plan (for the report), its priced J/token over
    the model it started from, and the weights it left sparse (name → keep mask)."""

    model: nn.Module
    plan: dict[str, Any]
    ratio: float
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


Method = Callable[..., LMCut]


def _structured(kinds: tuple[str, ...], measured: bool) -> Method:
    """Cuts of ``kinds`` by least importance per joule; ``measured``: importance is the
    calibration-loss rise of probes (else block influence and Wanda shares)."""

    def method(dense, data, scores, price, cfg, on_probe=None):
        why = {"importance": "block influence and Wanda shares"}
        if measured:
            scores = replace(scores, measured=_probe(dense, data, scores, cfg, on_probe))
            why = {
                "importance": f"calibration loss rise ({cfg.probe_windows} windows)",
                "sensitivity": scores.measured.to_dict(),
            }
        model, plan, ratio = cut_to_budget(
            dense, scores, cfg.target_energy, price, cfg.round_to, kinds=kinds
        )
        return LMCut(model, {**plan.to_dict(), **why}, ratio)

    return method


def _mean_loss(windows: torch.Tensor) -> Callable[[nn.Module], float]:
    """Mean next-token loss on ``windows`` (log perplexity: equal-length windows)."""
    return lambda model: math.log(perplexity(model, windows).value)


#: the last model's probes: a step retried after a failed guardrail probes the same model
#: again (the probes are the slow part of a cut), so its result is kept, keyed by the weights
_PROBED: dict[tuple[str, str], Sensitivity] = {}  # (weights, probe windows and scores)


def _probe(dense, data, scores, cfg, on_probe) -> Sensitivity:
    probe_windows = data.train[: cfg.probe_windows]
    seen = hashlib.blake2b(probe_windows.numpy().tobytes(), digest_size=16)
    for t in (*scores.mlp, *scores.heads):  # the probes mask by these scores
        seen.update(t.detach().float().cpu().numpy().tobytes())
    key = (state_digest(dense), seen.hexdigest())
    if key not in _PROBED:
        windows = _mean_loss(probe_windows)
        _PROBED.clear()
        _PROBED[key] = loss_sensitivity(dense, scores, windows, on_probe)
    return _PROBED[key]


#: the energy criterion's candidate plans: (measured importance?, kinds)
ENERGY_CANDIDATES = {
    "heads, channels and layers (measured loss)": (True, ALL_KINDS),
    "layers (measured loss)": (True, ("layer",)),
    "layers (block influence)": (False, ("layer",)),
}


#: the prune + bits arm's further candidates: int8 / int4 weights chosen layer by layer, and
#: the KV cache's dtype
BITS_CANDIDATES = {
    "heads, channels, layers, bits and KV (measured loss)": (True, (*ALL_KINDS, *STORAGE_KINDS)),
    "layers, bits and KV (measured loss)": (True, ("layer", *STORAGE_KINDS)),
    "bits and KV (measured loss)": (True, STORAGE_KINDS),
}


def _energy(dense, data, scores, price, cfg, on_probe=None, bits: bool = False):
    """The energy criterion: a plan per candidate, each cut to the budget by least importance
    per joule, plus SLEB-style greedy layer removal re-measured each round; the one that meets
    the budget with the least calibration loss (on ``calib_windows`` windows) is kept, because
    importance adds up only roughly. ``bits``: weight formats chosen per layer are cuts too."""
    measured = replace(scores, measured=_probe(dense, data, scores, cfg, on_probe))
    candidates = dict(ENERGY_CANDIDATES)
    if bits:
        probe = _mean_loss(data.train[: cfg.probe_windows])
        measured = replace(
            measured,
            bits=bits_sensitivity(dense, probe, on_probe),
            kv=kv_sensitivity(dense, probe),
        )
        candidates |= BITS_CANDIDATES
    loss = _mean_loss(data.train[: cfg.calib_windows])
    found: dict[str, _BudgetPlan] = {}
    for name, (use_measured, kinds) in candidates.items():
        given = measured if use_measured else scores
        model, plan, ratio = cut_to_budget(
            dense, given, cfg.target_energy, price, cfg.round_to, kinds=kinds
        )
        found[name] = _BudgetPlan(model, plan, ratio, loss(model))
    greedy = _greedy(dense, data, measured, found["layers (measured loss)"].plan, cfg, on_probe)
    model, ratio = priced_plan(dense, greedy, scores, cfg.round_to, price, price(dense).energy_j)
    found[GREEDY] = _BudgetPlan(model, greedy, ratio, loss(model))
    for storage in _storages(dense) if bits else ():
        model, plan, ratio = stored_greedy(dense, greedy.drop, storage, scores, cfg, price)
        found[_stored_name(storage)] = _BudgetPlan(model, plan, ratio, loss(model))
    best = min(found, key=lambda k: (found[k].ratio > cfg.target_energy + 1e-3, found[k].loss))
    kept = found[best]
    compared = {k: {"energy_ratio": c.ratio, "calib_loss": c.loss} for k, c in found.items()}
    plan = {
        **kept.plan.to_dict(),
        "chosen": best,
        "candidates": compared,
        "importance": f"calibration loss rise ({cfg.probe_windows} windows)",
        "sensitivity": measured.measured.to_dict()
        | ({"bits": measured.bits, "kv": measured.kv} if bits else {}),
    }
    return LMCut(kept.model, plan, kept.ratio)


def _energy_bits(dense, data, scores, price, cfg, on_probe=None):
    """The energy criterion with int8 / int4 weights per layer and the KV cache's dtype as cuts
    beside heads, channels and layers (perplexity then measured on dequantised weights and
    rounded K and V: pruning/lm_bits.py, pruning/lm_kv.py)."""
    return _energy(dense, data, scores, price, cfg, on_probe, bits=True)


@dataclass(frozen=True)
class _BudgetPlan:
    """One budget-meeting plan of the energy criterion and what it costs."""

    model: nn.Module
    plan: LMPlan
    ratio: float  # priced J/token over dense's
    loss: float  # mean calibration loss


GREEDY = "layers (greedy, re-measured)"


def _greedy(dense, data, measured: LMScores, one_shot: LMPlan, cfg, on_probe) -> LMPlan:
    """As many layers as the one-shot layer plan drops (layers price alike in a uniform model),
    chosen greedily among the ``count + 5`` cheapest by one-shot measured loss."""
    count = len(one_shot.drop)
    rises = measured.measured.layer
    shortlist = sorted(range(len(rises)), key=rises.__getitem__)[: count + 5]
    windows = _mean_loss(data.train[: cfg.probe_windows])
    return LMPlan(drop=greedy_layers(dense, windows, count, shortlist, on_probe))


def _storages(dense: nn.Module) -> list[tuple[str, str | None]]:
    """The uniform storages the greedy layer order is cut again under: each weight format,
    with the KV cache as the model keeps it or in each KV format (where the model allows)."""
    kvs = (None, *KV_KINDS.values()) if kv_roundable(dense) else (None,)
    some = any(quantisable(layer) for layer in decoder_layers(dense))
    return [(w, kv) for w in BITS_KINDS for kv in kvs] if some else []


def _stored_name(storage: tuple[str, str | None]) -> str:
    weights, kv = storage
    return f"{weights} weights{f', {kv} KV' if kv else ''}, then layers (greedy order)"


def stored_greedy(dense, order: list[int], storage, scores, cfg, price):
    """Every layer stored as ``storage`` (weights, KV), then the fewest layers of the greedy
    ``order`` dropped that meet the budget (a prefix of it: greedy picks one layer per round,
    so this is greedy with a smaller count). Storage saves bytes, so fewer layers go."""
    weights, kv = storage
    layers, dense_j = decoder_layers(dense), price(dense).energy_j

    def cut(k: int) -> tuple[nn.Module, LMPlan, float]:
        kept = {i: weights for i, x in enumerate(layers) if i not in order[:k] and quantisable(x)}
        plan = LMPlan(drop=list(order[:k]), bits=kept, kv=kv)
        model, ratio = priced_plan(dense, plan, scores, cfg.round_to, price, dense_j)
        return model, plan, ratio

    lo, hi, met = 0, len(order), None  # ratio falls as k grows: the least k that meets
    while lo < hi:
        mid = (lo + hi) // 2
        tried = cut(mid)
        if tried[2] <= cfg.target_energy + BUDGET_SLACK:
            hi, met = mid, tried  # the last cut that met is the one at the final bound
        else:
            lo = mid + 1
    return met or cut(lo)


def _torch_pruning(dense, data, scores, price, cfg, on_probe=None):
    """Torch-Pruning's own LLM recipe (:mod:`energyprune.pruning.tp_llm`: MetaPruner, L2 group
    magnitude, heads and hidden size pruned, ``round_to=4``) at the smallest pruning ratio that
    meets the budget; ``met: False`` in the plan when even the largest ratio tried does not."""
    cut = tp_llm_to_budget(dense, data.train[:1], cfg.target_energy, price, BUDGET_SLACK)
    return LMCut(cut.model, cut.plan, cut.energy_ratio)


def _wanda(sparsity: float, nm: tuple[int, int] | None) -> Method:
    def method(dense, data, scores, price, cfg, on_probe=None):
        model = copy.deepcopy(dense)
        done = wanda_prune(
            model, data.batches("train", 1, cfg.calib_windows), sparsity=sparsity, nm=nm
        )
        params = dict(model.named_parameters())
        masks = {f"{name}.weight": params[f"{name}.weight"] != 0 for name in done}
        ratio = price(model).energy_j / price(dense).energy_j
        what = f"{nm[0]}:{nm[1]}" if nm else f"{sparsity:.0%} unstructured"
        return LMCut(model, {"wanda": what, "layers": len(done)}, ratio, masks)

    return method


def _uniform_bits(dtype: str) -> Method:
    """Every decoder layer's weights stored as ``dtype`` (the budget is not consulted: the
    arm is the format's one point, priced as it is stored)."""

    def method(dense, data, scores, price, cfg, on_probe=None):
        model = copy.deepcopy(dense)
        layers = decoder_layers(model)
        stored = {i: dtype for i, layer in enumerate(layers) if quantisable(layer)}
        quantise_layers(model, stored)
        ratio = price(model).energy_j / price(dense).energy_j
        return LMCut(model, {"weight_bits": stored, "layers_stored": len(stored)}, ratio)

    return method


#: arm name → how it cuts (``cfg.target_energy`` is the budget of the structured ones)
METHODS: dict[str, Method] = {
    "energy": _energy,
    "energy+bits": _energy_bits,
    "depth": _structured(("layer",), measured=False),  # ShortGPT: block influence
    "width": _structured(("mlp", "heads"), measured=True),
    "torch-pruning": _torch_pruning,
    "wanda-50": _wanda(0.5, None),
    "wanda-2:4": _wanda(0.5, (2, 4)),
    "int8": _uniform_bits("int8"),
    "int4": _uniform_bits("int4"),
}


def calibration_scores(model: nn.Module, data: TextData, windows: int) -> LMScores:
    """Block influence, Wanda MLP-channel and query-head scores on ``windows`` training
    windows."""

    def batches():
        return data.batches("train", 1, windows)

    return LMScores(
        block_influence(model, batches()),
        mlp_scores(model, batches()),
        group_importance(model, batches()),
    )
