"""An image classifier as a kind of model for the run loop: priced per forward pass, judged by
validation top-1, cut by the CNN strategies (:mod:`energyprune.pipeline.steps`), trained with
cross-entropy and distillation, saved as a plan and safetensors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.energy.pricing.estimates import profile
from energyprune.energy.quantity import Estimated, Measured, energy_from_dict
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.pipeline.config import RunConfig, schedule_targets
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import Metrics, evaluate, top1
from energyprune.pipeline.finetune import OnBatch, StopFlag, TrainConfig, finetune
from energyprune.pipeline.kind import AccuracyDrop, StepOutcome, StepTarget
from energyprune.pipeline.steps import estimate_j, merge_plans, take_step, untrained_guardrail
from energyprune.pruning.apply import TOLERANCE
from energyprune.pruning.plan import PruningPlan
from energyprune.reports.plots import plot_run
from energyprune.reports.report import run_markdown

__all__ = ["ImageClassifier"]

_REPORTED = (
    "top1",
    "precision",
    "recall",
    "f1",
    "energy_j",
    "energy_measured",
    "latency_ms",
    "macs",
    "params",
    "size_bytes",
    "energy_estimated_j",
    "hardware",
    "energy",
    "estimate",
    "confusion_matrix",
)


@dataclass(frozen=True)
class _Saved:
    """A model and its plan, as :func:`energyprune.save` takes them."""

    model: nn.Module
    plan: PruningPlan | None


def _val_top1(model: nn.Module, data: Data) -> float:
    return top1(model, data.val, data.num_classes)


def _metrics(model: nn.Module, data: Data, cfg: RunConfig, meter: str | None) -> Metrics:
    example = example_input(model, data.input_shape)
    loader = data.test if data.test is not None else data.val
    return evaluate(model, loader, data.num_classes, example, cfg.hardware, meter)


@dataclass
class ImageClassifier:
    """The image-classifier kind: ``data`` (validation decides, test reports), the run's
    settings ``cfg``, the architecture spec ``arch`` and the meter's device, if any."""

    data: Data
    cfg: RunConfig
    arch: str
    meter: str | None = None
    guardrail: AccuracyDrop = field(init=False)

    def __post_init__(self) -> None:
        self.guardrail = AccuracyDrop(self.cfg.max_acc_drop)

    @property
    def validation(self) -> str:
        return self.data.val_source

    def price(self, model: nn.Module) -> float:
        return estimate_j(model, self.data, self.cfg, self.arch)

    def validate(self, model: nn.Module) -> float:
        return _val_top1(model, self.data)

    def meets_budget(self, fraction: float, target: float) -> bool:
        return fraction <= target * (1 + TOLERANCE)  # the one-shot prune's own slack

    def baseline(self, model: nn.Module) -> dict[str, Any]:
        return _metrics(model, self.data, self.cfg, self.meter).to_dict()

    def baseline_line(self, before: dict[str, Any], dense_val: float) -> str:
        energy = energy_from_dict(before["energy"])
        from energyprune.reports.report import fmt_joules

        return (
            f"val top-1 {100 * dense_val:.2f} %, test top-1 {100 * before['top1']:.2f} %, "
            f"{fmt_joules(energy.joules)} {energy.label}"
        )

    def refuse_early(self, model: nn.Module, cfg: RunConfig, dense_j: float, dense_val: float):
        untrained_guardrail(model, self.data, cfg, schedule_targets(cfg)[0], dense_j, dense_val)

    def step(
        self,
        model: nn.Module,
        cfg: RunConfig,
        target: StepTarget,
        teacher: nn.Module | None,
        stop: StopFlag,
        on_batch: OnBatch,
    ) -> StepOutcome:
        return take_step(
            model, self.data, cfg, target, teacher=teacher, stop=stop, on_batch=on_batch
        )

    def finetune(
        self,
        model: nn.Module,
        plan: PruningPlan | None,
        train: TrainConfig,
        teacher: nn.Module | None,
        stop: StopFlag,
        on_batch: OnBatch,
    ) -> bool:
        return finetune(
            model, self.data.train, train, teacher=teacher, stop=stop, on_batch=on_batch
        )

    def merge(self, plan: PruningPlan | None, step: PruningPlan) -> PruningPlan:
        return merge_plans(plan, step)

    def save(self, model: nn.Module, plan: PruningPlan | None, folder: Path) -> None:
        from energyprune.pruning.export import save

        save(_Saved(model, plan), folder, arch=self.arch)

    def load(self, folder: Path) -> tuple[nn.Module, PruningPlan]:
        from energyprune.pruning.export import load
        from energyprune.pruning.sparse import remask

        model, plan = load(folder)
        remask(model, plan)
        if plan.arch.get("name") != self.arch:
            raise ConfigError(
                f"checkpoint in {folder} is for '{plan.arch.get('name')}', not '{self.arch}'"
            )
        return model, plan

    def final_plan(self, plan: PruningPlan | None, cfg: RunConfig) -> PruningPlan | None:
        if plan is not None:
            plan.spec = cfg.spec.to_dict()  # what the run asked for (each step its share)
        return plan

    def report(
        self, state: Any, model: nn.Module, plan: Any, cfg: RunConfig, outcome: dict[str, Any]
    ) -> dict[str, Any]:
        after = _metrics(model, self.data, cfg, self.meter)
        before = state.before
        b = {k: before[k] for k in _REPORTED} | {"latency_noise": before.get("latency_noise")}
        a = {k: after.to_dict()[k] for k in (*_REPORTED, "latency_noise")}
        ratio, basis = _energy_ratio(before, after)
        return {
            "before": b,
            "after": a,
            "steps": state.steps,
            "dense_val_top1": state.dense_val,
            "energy_reduction": 1 - ratio,
            "accuracy_drop": 100 * (b["top1"] - a["top1"]),
            "energy_basis": basis,
            "stopped_early": state.stopped,
            "config": state.config,
            "validation": self.data.val_source,
        }

    def quality_of(self, report: dict[str, Any]) -> float:
        """The reported (test) top-1 of a report, for the stability of several seeds."""
        return report["after"]["top1"]

    def write(self, result: Any, out: Path, dense: nn.Module) -> None:
        """report.json, report.md, plots, plan and weights, the estimated profiles."""
        cfg, data, arch = self.cfg, self.data, self.arch
        example = example_input(dense, data.input_shape)
        before = profile(dense, example, cfg.hardware, name=arch, shapes_only=True)
        after = profile(result.model, example, cfg.hardware, name=arch, shapes_only=True)
        if result.plan is not None:
            self.save(result.model, result.plan, out)
        atomic_write_text(out / "profile_before.json", before.to_json() + "\n")
        atomic_write_text(out / "profile_after.json", after.to_json() + "\n")
        atomic_write_text(out / "report.json", json.dumps(result.report, indent=2) + "\n")
        title = f"{arch} on {data.name}: prune to {cfg.target_energy:.0%} of dense energy"
        atomic_write_text(out / "report.md", run_markdown(result.report, title))
        plot_run(result.report, before, after, out)

    def with_seed(self, seed: int) -> ImageClassifier:
        return replace(self, cfg=replace(self.cfg, seed=seed))


def _typed(metrics: dict, key: str) -> Estimated | Measured:
    """A checkpointed figure; checkpoints written before the typed figures carry flat keys."""
    if key in metrics:
        return energy_from_dict(metrics[key])
    if key == "energy" and metrics.get("energy_measured"):
        return Measured(metrics["energy_j"], "unknown", 0, float("nan"))
    return Estimated(metrics["energy_estimated_j"], metrics.get("hardware", "unknown"))


def _energy_ratio(before: dict, after: Metrics) -> tuple[float, str]:
    """After / before in the reported figures when they are alike (both measured on one basis,
    or both estimated), else in the estimates: a resumed run whose meter came or went never
    divides a measurement by an estimate."""
    try:
        return after.energy / _typed(before, "energy"), after.energy.label
    except TypeError:
        return after.estimate / _typed(before, "estimate"), after.estimate.label
