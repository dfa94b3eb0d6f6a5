"""Prune a decoder-only LM to a J/token budget, recover it by distillation, and prove what it
keeps with perplexity.

The steps: score on calibration windows (block influence, Wanda scores of MLP channels and
query heads; for the energy and width methods also the measured calibration-loss rise of each
kind of cut in each layer, :mod:`energyprune.pruning.lm_sensitivity`) → cut to the budget
under the run's regime (:func:`energyprune.pruning.lm_allocate.cut_to_budget`, re-priced with
:func:`energyprune.profile_lm`) → distil from the frozen dense model for ``finetune_steps``
optimiser steps (KL on next-token distributions at temperature T mixed with the LM loss) →
perplexity before the cut, after it and after recovery, on the same evaluation windows → the
guardrail: the run fails when perplexity rose more than ``max_ppl_rise`` percent over dense.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from energyprune.energy.lm import profile_lm
from energyprune.energy.regimes import Regime
from energyprune.errors import ConfigError
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.recover import Teacher
from energyprune.pipeline.text import (
    Perplexity,
    TextData,
    next_token_loss,
    perplexity,
    train_loader,
)
from energyprune.pruning.decoder import block_influence, group_importance
from energyprune.pruning.lm_allocate import (
    ALL_KINDS,
    LMPlan,
    LMScores,
    cut_to_budget,
    magnitude_scores,
    mlp_scores,
    priced_plan,
    uniform_width,
)
from energyprune.pruning.lm_sensitivity import greedy_layers, loss_sensitivity
from energyprune.pruning.wanda import wanda_prune

__all__ = [
    "METHODS",
    "LMPruneConfig",
    "LMPruneResult",
    "ppl_guardrail",
    "prune_lm",
]

OnStep = Callable[[int, int, float], None]
OnProbe = Callable[[int, int], None]


@dataclass(frozen=True)
class LMPruneConfig:
    """Settings of one LM pruning run."""

    target_energy: float = 0.7  # fraction of dense J/token; replaced by max_joules_per_token
    max_joules_per_token: float | None = None  # an absolute budget, estimated J/token
    hardware: str = "h100-sxm"
    finetune_steps: int = 200
    lr: float = 5e-5
    alpha: float = 0.5  # share of the distillation term; the rest is the LM loss
    temperature: float = 2.0
    max_ppl_rise: float | None = None  # percent over dense; None = no guardrail
    calib_windows: int = 16
    eval_windows: int = 20
    round_to: int = 32
    method: str = "energy"  # a key of METHODS
    probe_windows: int = 2  # calibration windows each sensitivity probe is scored on

    def __post_init__(self) -> None:
        if not 0 < self.target_energy < 1:
            raise ConfigError(f"--target-energy must be in (0, 1), got {self.target_energy}")
        if self.finetune_steps < 0:
            raise ConfigError(f"--finetune-steps must be >= 0, got {self.finetune_steps}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.max_joules_per_token is not None and not self.max_joules_per_token > 0:
            raise ConfigError(
                f"--max-joules-per-token must be > 0, got {self.max_joules_per_token}"
            )
        if self.probe_windows < 1:
            raise ConfigError(f"--probe-windows must be >= 1, got {self.probe_windows}")
        if self.max_ppl_rise is not None and self.max_ppl_rise < 0:
            raise ConfigError(f"--max-ppl-rise must be >= 0 (percent), got {self.max_ppl_rise}")


@dataclass
class LMPruneResult:
    """The pruned model and the evidence: J/token ratio (estimated), perplexities."""

    model: nn.Module
    plan: dict[str, Any]
    energy_ratio: float
    dense_j_per_token: float
    pruned_j_per_token: float
    ppl_dense: Perplexity
    ppl_cut: Perplexity
    ppl_recovered: Perplexity
    params_dense: int
    params_pruned: int
    guardrail_ok: bool
    guardrail: str
    losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    budget: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy_ratio": self.energy_ratio, "estimated": True,
            "dense_j_per_token": self.dense_j_per_token,
            "pruned_j_per_token": self.pruned_j_per_token,
            "ppl_dense": self.ppl_dense.to_dict(), "ppl_after_cut": self.ppl_cut.to_dict(),
            "ppl_after_recovery": self.ppl_recovered.to_dict(),
            "params_dense": self.params_dense, "params": self.params_pruned,
            "plan": self.plan, "guardrail_ok": self.guardrail_ok,
            "guardrail": self.guardrail, "losses": self.losses, "wall_s": self.wall_s,
            "budget": self.budget,
        }  # fmt: skip


def ppl_guardrail(dense: float, pruned: float, max_rise: float | None) -> tuple[bool, str]:
    """(held, why): perplexity may rise at most ``max_rise`` percent over dense."""
    rise = 100 * (pruned / dense - 1)
    if max_rise is None:
        return True, f"perplexity {dense:.2f} → {pruned:.2f} ({rise:+.1f} %), no guardrail set"
    held = rise <= max_rise
    verdict = "held" if held else "FAILED"
    return held, (f"guardrail {verdict}: perplexity {dense:.2f} → {pruned:.2f} ({rise:+.1f} %, "
                  f"limit +{max_rise:g} %)")  # fmt: skip


def _recover(
    student: nn.Module,
    teacher: Teacher,
    data: TextData,
    cfg: LMPruneConfig,
    on_step: OnStep | None,
    masks: dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """``cfg.finetune_steps`` AdamW steps of the one trainer (cosine schedule, clipped at 1) on
    training windows, one window per step, cycling; ``masks`` (parameter name → keep mask)
    hold sparse weights' zeros after every step."""
    losses: list[float] = []
    train = TrainConfig(
        steps=cfg.finetune_steps,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=0.0,
        distill_alpha=cfg.alpha,
        distill_temperature=cfg.temperature,
        clip_norm=1.0,
    )

    def on_batch(epoch: int, i: int, n: int, loss: float) -> None:
        losses.append(loss)
        if on_step:
            on_step(len(losses), cfg.finetune_steps, loss)

    def remask(model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, mask in (masks or {}).items():
            params[name].mul_(mask)

    finetune(student, train_loader(data), train, loss=next_token_loss, teacher=teacher.module,
             on_batch=on_batch, after_step=remask if masks else None)  # fmt: skip
    teacher.check()
    return losses


Method = Callable[..., tuple[nn.Module, dict[str, Any], float, dict | None]]


def _structured(kinds: tuple[str, ...], measured: bool) -> Method:
    """Cuts of ``kinds`` by least importance per joule; ``measured``: importance is the
    calibration-loss rise of probes (else block influence and Wanda shares)."""

    def method(dense, data, scores, price, cfg, on_probe=None):
        why = {"importance": "block influence and Wanda shares"}
        if measured:
            scores = replace(scores, measured=_probe(dense, data, scores, cfg, on_probe))
            why = {"importance": f"calibration loss rise ({cfg.probe_windows} windows)",
                   "sensitivity": scores.measured.to_dict()}  # fmt: skip
        model, plan, ratio = cut_to_budget(dense, scores, cfg.target_energy, price, cfg.round_to,
                                           kinds=kinds)  # fmt: skip
        return model, {**plan.to_dict(), **why}, ratio, None

    return method


def _mean_loss(windows: torch.Tensor) -> Callable[[nn.Module], float]:
    """Mean next-token loss on ``windows`` (log perplexity: equal-length windows)."""
    return lambda model: math.log(perplexity(model, windows).value)


def _probe(dense, data, scores, cfg, on_probe):
    return loss_sensitivity(dense, scores, _mean_loss(data.train[: cfg.probe_windows]), on_probe)


#: the energy criterion's candidate plans: (measured importance?, kinds)
ENERGY_CANDIDATES = {
    "heads, channels and layers (measured loss)": (True, ALL_KINDS),
    "layers (measured loss)": (True, ("layer",)),
    "layers (block influence)": (False, ("layer",)),
}


def _energy(dense, data, scores, price, cfg, on_probe=None):
    """The energy criterion: a plan per candidate, each cut to the budget by least importance
    per joule, plus SLEB-style greedy layer removal re-measured each round; the one that meets
    the budget with the least calibration loss (on ``calib_windows`` windows) is kept, because
    importance adds up only roughly."""
    measured = replace(scores, measured=_probe(dense, data, scores, cfg, on_probe))
    loss = _mean_loss(data.train[: cfg.calib_windows])
    found: dict[str, _Candidate] = {}
    for name, (use_measured, kinds) in ENERGY_CANDIDATES.items():
        given = measured if use_measured else scores
        model, plan, ratio = cut_to_budget(dense, given, cfg.target_energy, price, cfg.round_to,
                                           kinds=kinds)  # fmt: skip
        found[name] = _Candidate(model, plan, ratio, loss(model))
    greedy = _greedy(dense, data, measured, found["layers (measured loss)"].plan, cfg, on_probe)
    model, ratio = priced_plan(dense, greedy, scores, cfg.round_to, price, price(dense).energy_j)
    found[GREEDY] = _Candidate(model, greedy, ratio, loss(model))
    best = min(found, key=lambda k: (found[k].ratio > cfg.target_energy + 1e-3, found[k].loss))
    kept = found[best]
    compared = {k: {"energy_ratio": c.ratio, "calib_loss": c.loss} for k, c in found.items()}
    return kept.model, {**kept.plan.to_dict(), "chosen": best, "candidates": compared,
                        "importance": f"calibration loss rise ({cfg.probe_windows} windows)",
                        "sensitivity": measured.measured.to_dict()}, kept.ratio, None  # fmt: skip


@dataclass(frozen=True)
class _Candidate:
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


def _uniform(dense, data, scores, price, cfg, on_probe=None):
    model, plan, ratio = uniform_width(dense, magnitude_scores(dense), cfg.target_energy, price,
                                       cfg.round_to)  # fmt: skip
    return model, {"uniform": True, **plan.to_dict()}, ratio, None


def _wanda(sparsity: float, nm: tuple[int, int] | None) -> Method:
    def method(dense, data, scores, price, cfg, on_probe=None):
        model = copy.deepcopy(dense)
        done = wanda_prune(model, data.batches("train", 1, cfg.calib_windows), sparsity=sparsity,
                           nm=nm)  # fmt: skip
        params = dict(model.named_parameters())
        masks = {f"{name}.weight": params[f"{name}.weight"] != 0 for name in done}
        ratio = price(model).energy_j / price(dense).energy_j
        what = f"{nm[0]}:{nm[1]}" if nm else f"{sparsity:.0%} unstructured"
        return model, {"wanda": what, "layers": len(done)}, ratio, masks

    return method


#: arm name → how it cuts (``cfg.target_energy`` is the budget of the structured ones)
METHODS: dict[str, Method] = {
    "energy": _energy,
    "depth": _structured(("layer",), measured=False),  # ShortGPT: block influence
    "width": _structured(("mlp", "heads"), measured=True),
    "torch-pruning": _uniform,
    "wanda-50": _wanda(0.5, None),
    "wanda-2:4": _wanda(0.5, (2, 4)),
}


def _absolute_budget(cfg: LMPruneConfig, dense_j: float) -> LMPruneConfig:
    """``cfg`` with ``max_joules_per_token`` (when set) turned into a fraction of dense."""
    limit = cfg.max_joules_per_token
    if limit is None:
        return cfg
    if limit >= dense_j:
        raise ConfigError(f"--max-joules-per-token {limit:.4g} is not below the dense model's "
                          f"{dense_j:.4g} J/token (estimated, {cfg.hardware}): nothing to cut; "
                          "ask for less")  # fmt: skip
    return replace(cfg, target_energy=limit / dense_j)


def _scores(model: nn.Module, data: TextData, windows: int) -> LMScores:
    def batches():
        return data.batches("train", 1, windows)

    return LMScores(block_influence(model, batches()), mlp_scores(model, batches()),
                    group_importance(model, batches()))  # fmt: skip


def prune_lm(
    model: nn.Module,
    data: TextData,
    regime: Regime,
    cfg: LMPruneConfig,
    *,
    on_step: OnStep | None = None,
    on_probe: OnProbe | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> LMPruneResult:
    """Prune ``model`` (left untouched) to ``cfg.target_energy`` of its J/token in ``regime``
    (or to ``cfg.max_joules_per_token``)."""
    start = time.perf_counter()
    dense = model.eval()
    dense_lm = profile_lm(dense, regime, cfg.hardware)
    cfg = _absolute_budget(cfg, dense_lm.energy_j)  # before any slow step

    def price(m: nn.Module):
        return dense_lm if m is dense else profile_lm(m, regime, cfg.hardware)

    teacher = Teacher(dense)
    ppl_dense = perplexity(dense, data.eval, limit=cfg.eval_windows)
    log(f"dense: perplexity {ppl_dense.value:.2f} over {ppl_dense.windows} windows")
    scores = _scores(dense, data, cfg.calib_windows)
    pruned, plan, ratio, masks = METHODS[cfg.method](dense, data, scores, price, cfg,
                                                      on_probe)  # fmt: skip
    shown = {k: v for k, v in plan.items() if k != "sensitivity"}
    log(f"{cfg.method}: cut to {ratio:.3f} of dense estimated J/token ({cfg.hardware}): {shown}")
    if ratio > cfg.target_energy + 1e-3 and not cfg.method.startswith("wanda"):
        log(f"warning: {cfg.method} cuts reach only {ratio:.3f} of dense, not "
            f"{cfg.target_energy:.3f}: in this regime most of a token's energy is not in the "
            "parts it can cut (kernel launches and static power at small batch)")  # fmt: skip
    ppl_cut = perplexity(pruned, data.eval, limit=cfg.eval_windows)
    log(f"after the cut: perplexity {ppl_cut.value:.2f}")
    losses = _recover(pruned, teacher, data, cfg, on_step, masks)
    ppl_rec = perplexity(pruned, data.eval, limit=cfg.eval_windows)
    held, why = ppl_guardrail(ppl_dense.value, ppl_rec.value, cfg.max_ppl_rise)
    log(f"after recovery: perplexity {ppl_rec.value:.2f}; {why}")
    dense_j = dense_lm.energy_j
    return LMPruneResult(
        pruned, plan, ratio, dense_j, ratio * dense_j, ppl_dense, ppl_cut, ppl_rec,
        sum(p.numel() for p in dense.parameters()), sum(p.numel() for p in pruned.parameters()),
        held, why, losses, time.perf_counter() - start,
        {"target_energy": cfg.target_energy, "max_joules_per_token": cfg.max_joules_per_token},
    )  # fmt: skip
