"""Prune a decoder-only LM to a J/token budget, recover it by distillation, and prove what it
keeps with perplexity: the language-model side of the one run loop.

The cut methods are in :mod:`energyprune.pipeline.lm_methods` (:data:`METHODS`): the energy
criterion scores on calibration windows (block influence, Wanda scores of MLP channels and
query heads, and for the energy and width methods the measured calibration-loss rise of each
kind of cut in each layer, :mod:`energyprune.pruning.lm_sensitivity`) and cuts to the budget
under the run's regime (:func:`energyprune.pruning.lm_allocate.cut_to_budget`, re-priced with
:func:`energyprune.profile_lm`). The run itself, distillation from the frozen dense model,
the perplexity guardrail, checkpoints and resume, is :func:`energyprune.pipeline.run.run_kind`
with the :class:`~energyprune.pipeline.lm_kind.DecoderLM` kind; :func:`prune_lm` is its
Python entry point.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.energy.lm.per_token import profile_lm
from energyprune.energy.lm.regimes import Regime
from energyprune.errors import ConfigError
from energyprune.pipeline.config import RunConfig
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pipeline.kind import PerplexityRise
from energyprune.pipeline.lm_methods import (
    ENERGY_CANDIDATES,
    GREEDY,
    METHODS,
    LMCut,
    calibration_scores,
)
from energyprune.pipeline.text import Perplexity, TextData

__all__ = [
    "ENERGY_CANDIDATES",
    "GREEDY",
    "METHODS",
    "LMCut",
    "LMHooks",
    "LMPruneConfig",
    "LMPruneResult",
    "absolute_budget",
    "calibration_scores",
    "lm_run_config",
    "ppl_guardrail",
    "prune_lm",
]

OnStep = Callable[[int, int, float], None]
OnProbe = Callable[[int, int], None]


@dataclass(frozen=True)
class LMHooks:
    """What the caller sees of an LM run: its log lines, each distillation step (step, of
    steps, loss) and each sensitivity probe (probe, of probes)."""

    log: Callable[[str], None] = lambda line: None
    on_step: OnStep | None = None
    on_probe: OnProbe | None = None


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
    max_ppl_rise: float = 10.0  # the guardrail: percent perplexity may rise over dense
    calib_windows: int = 16
    eval_windows: int = 20
    round_to: int = 32
    method: str = "energy"  # a key of METHODS
    probe_windows: int = 2  # calibration windows each sensitivity probe is scored on
    batch_size: int = 1  # training windows per optimiser step
    steps: int = 1  # pruning steps, each cut then distilled (the run loop's schedule)
    seed: int = 0  # seeds the run (data order, probes)

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
        if min(self.batch_size, self.round_to, self.steps) < 1:
            raise ConfigError(
                "--batch-size, --round-to and --steps must be >= 1, got "
                f"{self.batch_size}, {self.round_to}, {self.steps}"
            )
        if not self.max_ppl_rise >= 0:
            raise ConfigError(f"--max-ppl-rise must be >= 0 (percent), got {self.max_ppl_rise}")


@dataclass
class LMPruneResult:
    """The pruned model and the evidence: J/token ratio (estimated), perplexities; a view of
    the run's report (``report``)."""

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
    guardrail_ok: bool  # held on the final model, and no step was refused by it
    guardrail: str
    budget_met: bool = True
    losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    budget: dict[str, float | None] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_report(cls, model: nn.Module, report: dict[str, Any], wall_s: float):
        def ppl(key: str) -> Perplexity:
            p = report[key]
            return Perplexity(p["ppl"], p["windows"], p["seq_len"], p["tokens"])

        return cls(
            model=model,
            plan=report["plan"],
            energy_ratio=report["energy_ratio"],
            dense_j_per_token=report["dense_j_per_token"],
            pruned_j_per_token=report["pruned_j_per_token"],
            ppl_dense=ppl("ppl_dense"),
            ppl_cut=ppl("ppl_after_cut"),
            ppl_recovered=ppl("ppl_after_recovery"),
            params_dense=report["params_dense"],
            params_pruned=report["params"],
            guardrail_ok=report["outcome"]["guardrail_held"],
            guardrail=report["outcome"]["guardrail"],
            budget_met=report["outcome"]["budget_met"],
            losses=report["losses"],
            wall_s=wall_s,
            budget=report["budget"],
            report=report,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.report


def ppl_guardrail(dense: float, pruned: float, max_rise: float) -> tuple[bool, str]:
    """(held, why): perplexity may rise at most ``max_rise`` percent over dense."""
    verdict = PerplexityRise(max_rise).check(dense, pruned)
    return verdict.held, verdict.line


def absolute_budget(cfg: LMPruneConfig, dense_j: float) -> LMPruneConfig:
    """``cfg`` with ``max_joules_per_token`` (when set) turned into a fraction of dense."""
    limit = cfg.max_joules_per_token
    if limit is None:
        return cfg
    if limit >= dense_j:
        raise ConfigError(
            f"--max-joules-per-token {limit:.4g} is not below the dense model's {dense_j:.4g} "
            f"J/token (estimated, {cfg.hardware}): nothing to cut; ask for less"
        )
    return replace(cfg, target_energy=limit / dense_j)


def lm_run_config(
    cfg: LMPruneConfig,
    *,
    schedule: str = "cubic",
    distill: bool = True,
    shard: bool = False,
) -> RunConfig:
    """The run loop's settings for an LM run: ``cfg.finetune_steps`` AdamW steps of
    distillation per pruning step (cosine schedule, clipped at 1), no final fine-tune."""
    from energyprune.pruning.spec import PruneSpec

    train = TrainConfig(
        steps=cfg.finetune_steps,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=0.0,
        distill_alpha=cfg.alpha,
        distill_temperature=cfg.temperature,
        clip_norm=1.0,
        seed=cfg.seed,
        shard=shard,
    )
    spec = PruneSpec(target_energy=cfg.target_energy, hardware=cfg.hardware)
    return RunConfig(
        spec=spec,
        steps=cfg.steps,
        schedule=schedule,
        train=train,
        final_epochs=0,
        seed=cfg.seed,
        distill=distill,
    )


def prune_lm(
    model: nn.Module,
    data: TextData,
    regime: Regime,
    cfg: LMPruneConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    hooks: LMHooks = LMHooks(),
) -> LMPruneResult:
    """Prune ``model`` (left untouched) to ``cfg.target_energy`` of its J/token in ``regime``
    (or to ``cfg.max_joules_per_token``) through the one run loop; checkpoints go to ``out``
    (a temporary folder when None)."""
    from energyprune.pipeline.lm_kind import DecoderLM
    from energyprune.pipeline.run import Hooks, run_kind

    start = time.perf_counter()
    dense = model.eval()
    cfg = absolute_budget(cfg, profile_lm(dense, regime, cfg.hardware).energy_j)
    kind = DecoderLM(data, cfg, regime, arch=type(dense).__name__, on_probe=hooks.on_probe)
    seen = [0]

    def on_batch(epoch: int, i: int, n: int, loss: float) -> None:
        seen[0] += 1
        if hooks.on_step:
            hooks.on_step(seen[0], cfg.finetune_steps, loss)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(out) if out is not None else Path(scratch)
        run_hooks = Hooks(log=hooks.log, on_batch=on_batch)
        result = run_kind(kind, dense, lm_run_config(cfg), folder, resume=resume, hooks=run_hooks)
    if not result.report:
        raise KeyboardInterrupt
    return LMPruneResult.from_report(result.model, result.report, time.perf_counter() - start)
