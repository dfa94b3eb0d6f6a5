"""The one run loop for every kind of model: K pruning steps toward the energy target, each
recovered and checked by the kind's guardrail (rolled back and retried smaller when it fails),
then a final fine-tune and the report. Checkpointed after every step; ``resume`` continues.

What differs between an image classifier and a language model (pricing, quality metric, cut,
batch loss, save and load) is behind :class:`~energyprune.pipeline.kind.ModelKind`; this
module calls only that protocol. Decisions use the kind's validation split only. Every energy
figure is the estimate under the profile unless a meter was read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_write_text, read_text
from energyprune.models.placement import placement
from energyprune.pipeline.config import RunConfig, schedule_targets
from energyprune.pipeline.finetune import OnBatch, StopFlag, is_main_process
from energyprune.pipeline.kind import ModelKind, StepOutcome, StepTarget
from energyprune.pipeline.recover import Teacher, state_digest
from energyprune.pruning.plan import PruningPlan

__all__ = [
    "Hooks",
    "RunConfig",
    "RunResult",
    "RunState",
    "run",
    "run_kind",
    "schedule_targets",
]

STATE = "checkpoint.json"


@dataclass
class RunResult:
    """The final model, its accumulated plan and the report dict (empty when interrupted)."""

    model: nn.Module
    plan: Any
    report: dict[str, Any]

    def plan_for(self, arch: str, hardware: str, input_shape: tuple[int, ...]) -> PruningPlan:
        """An image run's plan to save beside the model, naming ``arch`` — an unpruned plan
        when no step was accepted."""
        plan = self.plan or PruningPlan.unpruned(self.model, arch, input_shape, hardware)
        plan.arch = {"name": arch}
        return plan


@dataclass
class RunState:
    """What ``checkpoint.json`` holds: the dense baseline, the steps so far, why it stopped."""

    dense_val: float  # the dense model's validation quality, in the guardrail's metric
    dense_digest: str
    validation: str
    before: dict[str, Any]  # the dense model's report figures
    config: dict[str, Any]
    completed: int = 0
    fraction: float = 1.0  # of dense energy, after the last accepted step
    steps: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """A state as written; older checkpoints named the baseline ``dense_val_top1`` and may
        lack the digest (then no dense model matches) and the validation split (any does)."""
        data = {"dense_digest": None, "validation": None, **data}
        if "dense_val_top1" in data:
            data["dense_val"] = data.pop("dense_val_top1")
        return cls(**data)


@dataclass(frozen=True)
class Hooks:
    """What the caller sees of a run: its log, training batches and finished steps."""

    log: Callable[[str], None] = print
    on_batch: OnBatch = lambda epoch, i, n, loss: None
    on_step: Callable[[int, int], None] = lambda done, total: None


#: hooks that show nothing (tests, library use without a console)
QUIET = Hooks(log=lambda line: None)


@dataclass(frozen=True)
class _Loop:
    """What every step of one run shares: the frozen teacher, the stop flag, the hooks."""

    teacher: nn.Module | None
    stop: StopFlag
    hooks: Hooks


def _checkpoint(kind: ModelKind, out: Path, state: RunState, model: nn.Module | None, plan):
    """Weights and plan under step-numbered names first, then the state naming them (the dense
    baseline, step 0, is the state alone: its model is the one the run is given)."""
    if not is_main_process():
        return
    if model is not None:
        kind.save(model, plan, out / "checkpoint" / f"step-{state.completed}")
    atomic_write_text(out / STATE, state.to_json())


def _restore(kind: ModelKind, out: Path, dense: nn.Module) -> tuple[RunState, nn.Module, Any]:
    try:
        state = RunState.from_dict(json.loads(read_text(out / STATE, "checkpoint")))
        completed = int(state.completed)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{out / STATE} is damaged ({type(e).__name__}: {first_line(e)}): run again "
            "without --resume, or with another --out"
        ) from None
    if completed == 0:  # killed during step 1: the baseline holds if the dense model is the same
        if state.dense_digest != state_digest(dense):
            raise ConfigError(
                f"the dense baseline in {out} was made from other weights: resume with the "
                "same model and --weights, or run again without --resume"
            )
        return state, dense, None
    model, plan = kind.load(out / "checkpoint" / f"step-{completed}")
    return state, model.to(placement(dense).device), plan


def _attempt(kind: ModelKind, current, cfg: RunConfig, target: StepTarget, loop: _Loop):
    """One attempt at a step: its outcome, or a ConfigError's message when the target cannot
    be reached."""
    try:
        return kind.step(current, cfg, target, loop.teacher, loop.stop, loop.hooks.on_batch)
    except ConfigError as e:
        return str(e)


def _step(kind: ModelKind, current, cfg: RunConfig, state: RunState, dense_j: float, loop: _Loop):
    """Step ``state.completed + 1`` with the guardrail: each failed attempt retries a smaller
    cut. Returns the accepted outcome, None when interrupted, or the last outcome with
    ``state.stopped`` set when the step cannot be taken."""
    hooks = loop.hooks
    k = state.completed + 1
    fraction = schedule_targets(cfg)[k - 1]
    start_j = kind.price(current)
    if state.completed and kind.meets_budget(start_j / dense_j, fraction):  # cut this far
        state.steps.append(
            {
                "step": k,
                "target_fraction": fraction,
                "energy_fraction": start_j / dense_j,
                "already_met": True,
                "accepted": True,
            }
        )
        state.fraction = fraction
        return StepOutcome(current, None, start_j, True)
    outcome = None
    for attempt in range(cfg.retries + 1):
        hooks.log(
            f"step {k}/{cfg.steps} attempt {attempt}: cutting to {fraction:.3f} of dense energy"
        )
        train = replace(cfg.train, seed=cfg.seed * 100_003 + k * 101 + attempt)
        target = StepTarget(fraction * dense_j, start_j, dense_j, train)
        found = _attempt(kind, current, cfg, target, loop)
        if isinstance(found, str):  # unreachable: keep the best model so far
            state.stopped = f"step {k}: {found}"
            return outcome
        outcome = found
        if not outcome.completed:
            return None
        verdict = kind.guardrail.check(state.dense_val, kind.validate(outcome.model))
        record = {
            "step": k,
            "attempt": attempt,
            "target_fraction": fraction,
            "energy_fraction": outcome.energy_j / dense_j,
            **outcome.record,
            **verdict.record,
            "accepted": verdict.held,
        }
        state.steps.append(record)
        hooks.log(
            f"step {k}/{cfg.steps} attempt {attempt}: energy "
            f"{record['energy_fraction']:.3f} of dense (estimated), {verdict.line}"
        )
        if verdict.held:
            state.fraction = fraction
            return outcome
        fraction = state.fraction - (state.fraction - fraction) / 2  # backtrack
    state.stopped = f"step {k}: guardrail failed after {cfg.retries + 1} attempts"
    return outcome


def run(
    model: nn.Module,
    data: Any,
    cfg: RunConfig,
    out: str | Path,
    *,
    arch: str,
    resume: bool = False,
    meter_device: str | None = None,
    hooks: Hooks | None = None,
) -> RunResult:
    """Prune ``model`` toward ``cfg.target_energy`` in steps with recovery and a guardrail.

    Args:
        model: the trained dense model (its architecture spec is ``arch``).
        data: the kind's data (:class:`~energyprune.pipeline.data.Data` for an image
            classifier); or a :class:`~energyprune.pipeline.kind.ModelKind` itself.
        out: run folder (checkpoint, report).
        arch: model spec to rebuild the architecture on resume and load.
        resume: continue after the last completed step recorded in ``out``.
        meter_device: read a meter there for the before/after energy, if one exists.
        hooks: what the caller sees: log lines, training batches, finished steps.
    """
    from energyprune.pipeline.kinds import kind_for

    kind = kind_for(data, cfg, arch, meter_device)
    return run_kind(kind, model, cfg, out, resume=resume, hooks=hooks)


def run_kind(
    kind: ModelKind,
    model: nn.Module,
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    hooks: Hooks | None = None,
) -> RunResult:
    """:func:`run` for a kind already built."""
    hooks = hooks or Hooks()
    out = Path(out)
    stop = StopFlag()
    dense_j = kind.price(model)
    state, current, plan = _start(kind, model, cfg, out, resume, hooks.log, dense_j)
    # the dense model, frozen once for the run (also on --resume), checked after every fine-tune
    frozen = Teacher(model) if cfg.distill else None
    loop = _Loop(frozen.module if frozen is not None else None, stop, hooks)
    with stop.installed():
        while state.completed < cfg.steps and state.stopped is None:
            step = _step(kind, current, cfg, state, dense_j, loop)
            if frozen is not None:
                frozen.check()
            if step is None and state.stopped is None:
                hooks.log("interrupted: the last completed step is checkpointed; use --resume")
                return RunResult(current, plan, {})
            if state.stopped is not None:
                hooks.log(f"stopped early ({state.stopped}): keeping step {state.completed}")
                break
            if step.plan is not None:
                current, plan = step.model, kind.merge(plan, step.plan)
            state.completed += 1
            _checkpoint(kind, out, state, current, plan)
            hooks.on_step(state.completed, cfg.steps)
        if plan is not None and not _final_finetune(kind, current, plan, cfg, loop):
            hooks.log("interrupted during the final fine-tune; the last step is checkpointed")
            return RunResult(current, plan, {})
        if frozen is not None:
            frozen.check()
    plan = kind.final_plan(plan, cfg)
    outcome = _outcome(kind, state, current, cfg, dense_j)
    report = kind.report(state, current, plan, cfg, outcome)
    report["outcome"] = outcome
    return RunResult(current, plan, report)


def _outcome(kind: ModelKind, state: RunState, model, cfg: RunConfig, dense_j: float) -> dict:
    """Whether the run did what it was asked: the energy budget and the guardrail, on the final
    model (estimated energy; validation split)."""
    energy_j = kind.price(model)
    fraction = energy_j / dense_j
    quality = kind.validate(model)
    verdict = kind.guardrail.check(state.dense_val, quality)
    met = kind.meets_budget(fraction, cfg.target_energy)
    refused = state.stopped is not None and "guardrail failed" in state.stopped
    budget = (
        f"energy budget {'met' if met else 'MISSED'}: {fraction:.3f} of dense (estimated), "
        f"target {cfg.target_energy:.3f}"
    )
    return {
        "energy_j": energy_j,
        "quality": quality,
        "energy_fraction": fraction,
        "target_energy": cfg.target_energy,
        "budget_met": met,
        "budget": budget,
        "guardrail_held": verdict.held and not refused,
        "guardrail": verdict.line + ("; every attempt of a step failed it" if refused else ""),
        "guardrail_rule": kind.guardrail.describe(),
        "ok": met and verdict.held and not refused,
    }


def _start(kind: ModelKind, model, cfg: RunConfig, out: Path, resume: bool, log, dense_j: float):
    """The run's state, model and plan so far: restored from ``out`` on ``resume``, else the
    dense model measured before any cut."""
    if resume and (out / STATE).is_file():
        state, current, plan = _restore(kind, out, model)
        if state.validation not in (None, kind.validation):  # the guardrail's baseline
            raise ConfigError(
                f"the checkpoint in {out} was validated on {state.validation}, this run on "
                f"{kind.validation}: resume with the same --val-from and --seed"
            )
        log(
            f"resuming after step {state.completed} of {cfg.steps} (dense baseline from "
            f"{out / STATE}: {kind.guardrail.show(state.dense_val)})"
        )
        return state, current, plan
    if resume:
        log(f"nothing to resume in {out}: starting from the dense model")
    log(f"dense baseline: evaluating {kind.arch} on validation and test")
    dense_val = kind.validate(model)
    kind.refuse_early(model, cfg, dense_j, dense_val)
    before = kind.baseline(model)
    state = RunState(
        dense_val=dense_val,
        dense_digest=state_digest(model),
        validation=kind.validation,
        before=before,
        config=json.loads(json.dumps(asdict(cfg), default=str)),
    )
    _checkpoint(kind, out, state, None, None)  # a kill during step 1 keeps the baseline
    log(f"dense baseline: {kind.baseline_line(before, dense_val)}; checkpointed in {out / STATE}")
    return state, model, None


def _final_finetune(kind: ModelKind, model, plan, cfg: RunConfig, loop: _Loop) -> bool:
    """The last fine-tune (``final_epochs``, its own seed); False when interrupted."""
    if cfg.final_epochs == 0:
        return True
    epochs = cfg.final_epochs if cfg.final_epochs is not None else cfg.train.epochs
    train = replace(cfg.train, epochs=epochs, seed=cfg.seed * 100_003 + 7)
    return kind.finetune(model, plan, train, loop.teacher, loop.stop, loop.hooks.on_batch)
