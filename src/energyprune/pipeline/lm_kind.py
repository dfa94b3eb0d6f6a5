"""A decoder-only language model as a kind of model for the run loop: priced per token in a
serving regime (:func:`energyprune.profile_lm`), judged by perplexity on the evaluation
windows, cut by the LM methods (:data:`energyprune.pipeline.lm_methods.METHODS`: heads, MLP
channels and layers by importance per joule, or the baselines), trained with next-token
distillation, saved as a Hugging Face folder (with ``plan.json`` when widths differ per layer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.energy.lm.per_token import profile_lm
from energyprune.energy.lm.regimes import Regime
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text, read_text
from energyprune.pipeline.config import RunConfig
from energyprune.pipeline.finetune import DuringTraining, OnBatch, StopFlag, TrainConfig, finetune
from energyprune.pipeline.kind import PerplexityRise, StepOutcome, StepTarget
from energyprune.pipeline.text import TextData, next_token_loss, perplexity, train_loader
from energyprune.pruning.lm_allocate import BUDGET_SLACK
from energyprune.pruning.lm_bits import trained_on_grid

__all__ = ["CUTS_FILE", "DecoderLM", "LMPlanLog"]

CUTS_FILE = "cuts.json"  # the run's cuts, step by step, beside a checkpoint's weights


@dataclass
class LMPlanLog:
    """What a run cut, step by step, and the weights left sparse (their zeros are kept)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    sparse_weights: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "sparse_weights": self.sparse_weights}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMPlanLog:
        return cls(list(data["steps"]), list(data["sparse_weights"]))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _masks(model: nn.Module, plan: LMPlanLog | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The sparse weights with their keep-masks (their zeros now are the cut ones); the weight
    tensors themselves, so a stored layer's float master is masked under its parametrisation."""
    if plan is None or not plan.sparse_weights:
        return []
    params = dict(model.named_parameters())
    return [(params[name], params[name] != 0) for name in plan.sparse_weights]


@dataclass
class DecoderLM:
    """The decoder-LM kind: ``data`` (training windows calibrate and train, evaluation windows
    judge), the LM options ``options`` (an :class:`~energyprune.pipeline.lm_prune.
    LMPruneConfig`: method, windows, hardware, guardrail), the serving ``regime``."""

    data: TextData
    options: Any
    regime: Regime
    arch: str
    tokenizer: Any = None
    weights: str = ""  # where the weights came from, for the report
    on_probe: Any = None  # (done, total) of the loss probes
    guardrail: PerplexityRise = field(init=False)

    def __post_init__(self) -> None:
        rise = self.options.max_ppl_rise
        self.guardrail = PerplexityRise(rise)

    @property
    def validation(self) -> str:
        span = self.data.eval_span or self.data.eval_path
        return f"{span} ({self.options.eval_windows} windows)"

    def price(self, model: nn.Module) -> float:
        return profile_lm(model, self.regime, self.options.hardware).energy_j

    def meets_budget(self, fraction: float, target: float) -> bool:
        return fraction <= target + BUDGET_SLACK  # as cut_to_budget accepts a cut

    def _perplexity(self, model: nn.Module):
        return perplexity(model, self.data.eval, limit=self.options.eval_windows)

    def validate(self, model: nn.Module) -> float:
        return self._perplexity(model).value

    def baseline(self, model: nn.Module) -> dict[str, Any]:
        return {
            "ppl": self._perplexity(model).to_dict(),
            "j_per_token": self.price(model),
            "params": _params(model),
        }

    def baseline_line(self, before: dict[str, Any], dense_val: float) -> str:
        return (
            f"perplexity {dense_val:.2f} over {before['ppl']['windows']} windows, "
            f"{before['j_per_token']:.4g} J/token estimated ({self.options.hardware})"
        )

    def refuse_early(self, model: nn.Module, cfg: RunConfig, dense_j: float, dense_val: float):
        return None  # every cut is re-priced; a guardrail that fails is the run's to report

    def step(
        self,
        model: nn.Module,
        cfg: RunConfig,
        target: StepTarget,
        teacher: nn.Module | None,
        stop: StopFlag,
        on_batch: OnBatch,
    ) -> StepOutcome:
        from energyprune.pipeline import lm_methods

        fraction = target.target_j / target.start_j  # of the model this step starts from
        if not 0 < fraction < 1:
            raise ConfigError(f"the step asks for {fraction:.3f} of the model's J/token")
        options = replace(self.options, target_energy=fraction)
        current = profile_lm(model, self.regime, options.hardware)

        def price(m: nn.Module):
            return current if m is model else profile_lm(m, self.regime, options.hardware)

        scores = lm_methods.calibration_scores(model, self.data, options.calib_windows)
        method = lm_methods.METHODS[options.method]
        cut = method(model, self.data, scores, price, options, self.on_probe)
        ppl_cut = self._perplexity(cut.model)
        losses: list[float] = []

        def counted(epoch: int, i: int, n: int, loss: float) -> None:
            losses.append(loss)
            on_batch(epoch, i, n, loss)

        as_saved = json.loads(json.dumps(cut.plan))  # as a checkpoint reads it back
        log = LMPlanLog([as_saved], sorted(cut.masks))
        done = self.finetune(cut.model, log, target.train, teacher, stop, counted)
        record = {"method": options.method, "ppl_after_cut": ppl_cut.to_dict(), "losses": losses}
        return StepOutcome(cut.model, log, cut.ratio * target.start_j, done, record)

    def finetune(
        self,
        model: nn.Module,
        plan: LMPlanLog | None,
        train: TrainConfig,
        teacher: nn.Module | None,
        stop: StopFlag,
        on_batch: OnBatch,
    ) -> bool:
        masks = _masks(model, plan)

        def remask(m: nn.Module) -> None:
            for weight, mask in masks:
                weight.mul_(mask)

        with trained_on_grid(model):  # stored layers train quantisation-aware
            return finetune(
                model,
                train_loader(self.data, self.options.batch_size),
                train,
                loss=next_token_loss,
                teacher=teacher,
                stop=stop,
                on_batch=on_batch,
                during=DuringTraining(after_step=remask if masks else None),
            )

    def merge(self, plan: LMPlanLog | None, step: LMPlanLog) -> LMPlanLog:
        if plan is None:
            return step
        sparse = sorted({*plan.sparse_weights, *step.sparse_weights})
        return LMPlanLog([*plan.steps, *step.steps], sparse)

    def save(self, model: nn.Module, plan: LMPlanLog | None, folder: Path) -> None:
        from energyprune.pruning.lm_export import save_lm

        save_lm(model, folder, self.tokenizer)
        cuts = {"arch": self.arch, **(plan or LMPlanLog()).to_dict()}
        atomic_write_text(folder / CUTS_FILE, json.dumps(cuts, indent=2) + "\n")

    def load(self, folder: Path) -> tuple[nn.Module, LMPlanLog]:
        from energyprune.pruning.lm_export import load_lm

        try:
            cuts = json.loads(read_text(folder / CUTS_FILE, "LM cuts"))
            plan, arch = LMPlanLog.from_dict(cuts), cuts.get("arch")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                f"{folder / CUTS_FILE} is damaged ({e}): run again without --resume"
            ) from None
        if arch != self.arch:
            raise ConfigError(
                f"checkpoint in {folder} is for '{arch}', not '{self.arch}': resume with the "
                "same model, or run again without --resume"
            )
        return load_lm(folder), plan

    def final_plan(self, plan: LMPlanLog | None, cfg: RunConfig) -> LMPlanLog | None:
        return plan

    def report(
        self, state: Any, model: nn.Module, plan: Any, cfg: RunConfig, outcome: dict[str, Any]
    ) -> dict[str, Any]:
        before = state.before
        pruned_j = outcome["energy_j"]  # the loop priced and evaluated the final model
        recovered = {**before["ppl"], "ppl": outcome["quality"]}  # the same windows as dense
        accepted = [s for s in state.steps if s["accepted"] and "ppl_after_cut" in s]
        last = accepted[-1] if accepted else None
        return {
            "kind": "language model",
            "model": self.arch,
            "weights": self.weights,
            "regime": self.regime.to_dict(),
            "hardware": self.options.hardware,
            "estimated": True,
            "energy_ratio": pruned_j / before["j_per_token"],
            "dense_j_per_token": before["j_per_token"],
            "pruned_j_per_token": pruned_j,
            "ppl_dense": before["ppl"],
            "ppl_after_cut": last["ppl_after_cut"] if last else before["ppl"],
            "ppl_after_recovery": recovered,
            "params_dense": before["params"],
            "params": _params(model),
            "plan": plan.steps[-1] if plan and plan.steps else {},
            "plan_steps": plan.to_dict() if plan else LMPlanLog().to_dict(),
            "steps": state.steps,
            "guardrail_ok": outcome["guardrail_held"],
            "guardrail": outcome["guardrail"],
            "losses": [x for s in accepted for x in s.get("losses", [])],
            "budget": {
                "target_energy": cfg.target_energy,
                "max_joules_per_token": self.options.max_joules_per_token,
            },
            "stopped_early": state.stopped,
            "config": state.config,
            "validation": self.validation,
        }

    def quality_of(self, report: dict[str, Any]) -> float:
        return report["ppl_after_recovery"]["ppl"]

    def write(self, result: Any, out: Path, dense: nn.Module) -> None:
        """``out`` itself as the model folder (a Hugging Face folder: ``from_pretrained(out)``
        loads uniform widths; ``plan.json`` when they differ per layer), with report.json and
        report.md beside the weights."""
        from energyprune.pruning.lm_export import save_lm
        from energyprune.reports.lm import lm_prune_markdown

        report = result.report
        why_not = save_lm(result.model, out, self.tokenizer)
        report["from_pretrained"] = "yes" if why_not is None else f"no: {why_not}"
        atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out / "report.md", lm_prune_markdown(report))

    def for_search(self, method: str) -> DecoderLM:
        """This kind cutting with ``method`` and no guardrail (a search maps the front)."""
        return replace(self, options=replace(self.options, method=method, max_ppl_rise=math.inf))

    def with_seed(self, seed: int) -> DecoderLM:
        return self  # windows are read in order: the seed moves only the trainer's
