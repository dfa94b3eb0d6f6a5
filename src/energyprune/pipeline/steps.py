"""One pruning step of the pipeline: cut to the step's energy target, then recover.

Two ways to take a step:

* **one-shot** (schedules ``linear`` and ``cubic``): prune to the target, re-estimate batch-norm
  statistics (:func:`~energyprune.pipeline.recover.recalibrate_bn`), fine-tune. With
  ``candidates > 1`` several ways to meet the budget (criteria, per-layer caps, width rounding)
  are each recalibrated and scored on a few validation batches without training, and only the
  best is fine-tuned (EagleEye, ECCV 2020);
* **gradual** (``schedule="gradual"``, Zhu & Gupta 2017): the budget falls from the step's start
  to its target in :data:`GRADUAL_EVENTS` cuts spread over the first half of the step's
  fine-tune, cubically (big cuts first), and the second half recovers. Every training forward
  pass re-estimates batch-norm statistics, and they are recalibrated once more at the end.

Every fine-tune distils from the dense model when the run has one (``RunConfig.distill``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from energyprune.energy.pricing.estimates import profile
from energyprune.errors import ConfigError
from energyprune.models.placement import example_input
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import top1
from energyprune.pipeline.finetune import DuringTraining, OnBatch, StopFlag, finetune
from energyprune.pipeline.kind import StepOutcome, StepTarget
from energyprune.pipeline.recover import recalibrate_bn
from energyprune.pruning.apply import PruneResult, prune
from energyprune.pruning.importance import CRITERIA
from energyprune.pruning.plan import PruningPlan

if TYPE_CHECKING:
    from energyprune.pipeline.config import RunConfig

__all__ = [
    "GRADUAL_EVENTS",
    "VARIANTS",
    "StepOutcome",
    "merge_plans",
    "prune_step",
    "take_step",
    "untrained_guardrail",
]

GRADUAL_EVENTS = 8  # cuts per gradual step
GRADUAL_SPAN = 0.5  # share of the step's optimiser steps over which the cuts happen
SCORE_BATCHES = 4  # validation batches that score one candidate
# Other ways to meet a step's budget, tried in this order after the configured one.
VARIANTS: tuple[dict[str, Any], ...] = (
    {"criterion": "l2"},
    {"criterion": "energy"},
    {"criterion": "l2", "max_layer_ratio": 0.6},
    {"criterion": "energy", "max_layer_ratio": 0.6},
    {"criterion": "l1"},
    {"criterion": "bn_scale"},
    {"criterion": "l2", "strategy": "layerwise-energy"},
    {"criterion": "l2", "round_to": 8},
)


def merge_plans(plan: PruningPlan | None, step: PruningPlan) -> PruningPlan:
    """``step`` applied after ``plan``: rounds appended, masks overlaid, dense joules kept."""
    if plan is None:
        return step
    merged = replace(step, rounds=plan.rounds + step.rounds, dense_j=plan.dense_j)
    merged.masks = {**plan.masks, **step.masks}
    return merged


def prune_step(
    model: nn.Module,
    example: torch.Tensor,
    cfg: RunConfig,
    target_j: float,
    data: Data | None = None,
) -> PruneResult:
    """One-shot prune of ``model`` to ``target_j`` estimated joules with the run's spec; a
    gradient criterion (``taylor``) scores on ``cfg.score_batches`` of ``data``'s training
    batches (without ``data`` it falls back to its data-free proxy)."""
    spec = replace(cfg.spec, target_energy=None, max_joules=target_j)
    batches = None
    if data is not None and CRITERIA[spec.criterion].needs_gradients:
        batches = list(itertools.islice(data.train, cfg.score_batches))
    return prune(model, example, spec=spec, data=batches)


def _settings(cfg: RunConfig) -> dict[str, Any]:
    spec = cfg.spec
    return {
        "criterion": spec.criterion,
        "strategy": spec.strategy,
        "max_layer_ratio": spec.max_layer_ratio,
        "round_to": spec.round_to,
    }


def _variants(cfg: RunConfig) -> Iterator[RunConfig]:
    """The configured settings first, then each of :data:`VARIANTS` whose settings differ."""
    seen = [_settings(cfg)]
    yield cfg
    for overrides in VARIANTS:
        variant = replace(cfg, spec=replace(cfg.spec, **overrides))
        if _settings(variant) not in seen:
            seen.append(_settings(variant))
            yield variant


def _recalibrate(model: nn.Module, data: Data, cfg: RunConfig, seed: int) -> int:
    """:func:`recalibrate_bn` on batches fixed by ``seed`` (shuffle and augmentation), so a
    step re-run after ``--resume`` sees the same batches as the uninterrupted run."""
    torch.manual_seed(seed)
    if getattr(data.train, "generator", None) is not None:
        data.train.generator.manual_seed(seed)
    return recalibrate_bn(model, data.train, cfg.bn_batches)


def _score(model: nn.Module, data: Data, batches: int | None) -> float:
    loader = data.val if batches is None else itertools.islice(data.val, batches)
    return top1(model, loader, data.num_classes)


@dataclass
class _Choice:
    """The cut a step keeps: its result, its validation score, its entry among ``tried``
    (every way of meeting the budget that was tried)."""

    result: PruneResult
    score: float
    entry: dict[str, Any]
    tried: list[dict[str, Any]]


def _choose(model, data, cfg: RunConfig, target_j, dense_j, seed) -> _Choice:
    """The best of ``cfg.candidates`` distinct cuts, each recalibrated and scored; settings
    that make a cut already scored are listed, not scored."""
    example = example_input(model, data.input_shape)
    score_batches = None if cfg.candidates == 1 else SCORE_BATCHES
    best, tried, cuts = None, [], []
    for variant in _variants(cfg):
        if len(cuts) >= cfg.candidates:
            break
        try:
            result = prune_step(model, example, variant, target_j, data)
        except ConfigError as e:
            if cfg.candidates == 1:
                raise
            tried.append({**_settings(variant), "skipped": str(e).split(":")[0]})
            continue
        same = next((i for i, rounds in cuts if rounds == result.plan.rounds), None)
        if same is not None:
            tried.append({**_settings(variant), "same_cut_as": same})
            continue
        cuts.append((len(tried), result.plan.rounds))
        stale = _score(result.model, data, score_batches)
        used = _recalibrate(result.model, data, cfg, seed)
        fresh = _score(result.model, data, score_batches) if used else None
        tried.append(
            {
                **_settings(variant),
                "energy_fraction": result.after.total.energy_j / dense_j,
                "val_top1_before_bn": stale,
                "val_top1_after_bn": fresh,
            }
        )
        score = stale if fresh is None else fresh
        if best is None or score > best.score:
            best = _Choice(result, score, tried[-1], tried)
    if best is None:
        raise ConfigError(f"no candidate met the step's budget ({tried[0]['skipped']})")
    return best


@dataclass(frozen=True)
class _Recovery:
    """How a step's model is trained back: the frozen teacher, the stop flag, the progress."""

    teacher: nn.Module | None
    stop: StopFlag | None
    on_batch: OnBatch


def _one_shot(model, data, cfg: RunConfig, target: StepTarget, recovery: _Recovery):
    train = target.train
    choice = _choose(model, data, cfg, target.target_j, target.dense_j, train.seed)
    result, chosen, tried = choice.result, choice.entry, choice.tried
    record = {
        "val_top1_before_bn": chosen["val_top1_before_bn"],
        "val_top1_after_bn": chosen["val_top1_after_bn"],
        "bn_recalibrated": "after the cut" if chosen["val_top1_after_bn"] is not None else None,
        "settings": {k: chosen[k] for k in _settings(cfg)},
    }
    if cfg.candidates > 1:
        record["candidates"] = tried
        record["scored_on_batches"] = SCORE_BATCHES
    completed = finetune(
        result.model,
        data.train,
        train,
        teacher=recovery.teacher,
        stop=recovery.stop,
        on_batch=recovery.on_batch,
    )
    return StepOutcome(result.model, result.plan, result.after.total.energy_j, completed, record)


@dataclass
class _GradualCuts:
    """The cuts a gradual step has made inside its fine-tune so far."""

    model: nn.Module
    energy_j: float
    events: int
    plan: PruningPlan | None = None
    done: int = 0


def _gradual(model, data, cfg: RunConfig, target: StepTarget, recovery: _Recovery):
    train, target_j, start_j = target.train, target.target_j, target.start_j
    example = example_input(model, data.input_shape)
    per_epoch = len(data.train) if train.max_batches is None else train.max_batches
    total = train.epochs * min(per_epoch, len(data.train))
    cuts = _GradualCuts(model, start_j, events=max(1, min(GRADUAL_EVENTS, total)))
    every = max(1, int(total * GRADUAL_SPAN) // cuts.events)

    def cut(current: nn.Module, step: int, steps: int) -> nn.Module:
        if cuts.done >= cuts.events:
            return current
        cuts.done += 1
        left = 1 - cuts.done / cuts.events
        step_j = target_j + (start_j - target_j) * left**3
        result = prune_step(current, example, cfg, step_j, data)
        cuts.model, cuts.energy_j = result.model, result.after.total.energy_j
        cuts.plan = merge_plans(cuts.plan, result.plan)
        return result.model

    if total == 0:  # no training to prune inside: one cut, straight to the target
        cuts.done = cuts.events - 1
        cut(model, 0, 0)
        completed = True
    else:
        completed = finetune(
            model,
            data.train,
            train,
            teacher=recovery.teacher,
            stop=recovery.stop,
            on_batch=recovery.on_batch,
            during=DuringTraining(every=every, before=cut),
        )
    trained = cuts.model
    stale = _score(trained, data, None)
    used = _recalibrate(trained, data, cfg, train.seed) if completed else 0
    record = {
        "val_top1_before_bn": stale,
        "val_top1_after_bn": _score(trained, data, None) if used else None,
        "bn_recalibrated": "after training" if used else None,
        "cuts": cuts.done,
        "cut_every_batches": every,
        "settings": _settings(cfg),
    }
    return StepOutcome(trained, cuts.plan, cuts.energy_j, completed, record)


def take_step(
    model: nn.Module,
    data: Data,
    cfg: RunConfig,
    target: StepTarget,
    *,
    teacher: nn.Module | None,
    stop: StopFlag | None = None,
    on_batch: OnBatch = lambda epoch, i, n, loss: None,
) -> StepOutcome:
    """Prune ``model`` (at ``target.start_j`` estimated joules) to ``target.target_j`` and
    recover with ``target.train``, by the run's schedule; a :class:`ConfigError` means the
    target is unreachable."""
    step = _gradual if cfg.schedule == "gradual" else _one_shot
    out = step(model, data, cfg, target, _Recovery(teacher, stop, on_batch))
    if out.plan is None:
        raise ConfigError("the step made no cut")
    return out


def untrained_guardrail(
    model: nn.Module, data: Data, cfg: RunConfig, first: float, dense_j: float, dense_val: float
) -> None:
    """Refuse up front a run whose steps cannot pass the guardrail: without fine-tuning
    (``train.epochs == 0``) only BN recalibration recovers accuracy, so the smallest cut the
    back-tracking would try for step 1 (``first`` of dense, halved toward 1 per retry) is cut
    and scored once against the run's dense figures; when even it breaks the guardrail, no
    attempt will pass."""
    if cfg.train.epochs > 0:
        return
    fraction = 1 - (1 - first) / 2**cfg.retries
    example = example_input(model, data.input_shape)
    try:
        cut = prune_step(model, example, cfg, fraction * dense_j, data).model
    except ConfigError:
        return  # unreachable targets are the run's to report
    _recalibrate(cut, data, cfg, cfg.seed)
    drop = 100 * (dense_val - _score(cut, data, None))
    if drop > cfg.max_acc_drop:
        raise ConfigError(
            f"no step can pass the guardrail without training: even the smallest cut tried "
            f"({fraction:.3f} of dense energy, after BN recalibration) drops validation top-1 "
            f"{drop:.2f} pt, past max_acc_drop {cfg.max_acc_drop} pt; fine-tune "
            "(--finetune-epochs 1 or more) or allow a larger drop"
        )


def estimate_j(model: nn.Module, data: Data, cfg: RunConfig, arch: str) -> float:
    """The model's estimated joules per forward pass under the run's profile (masks folded)."""
    example = example_input(model, data.input_shape)
    return profile(model, example, cfg.hardware, name=arch, shapes_only=True).total.energy_j
