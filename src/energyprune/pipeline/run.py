"""The iterative loop: K pruning steps toward the energy target, each fine-tuned and validated
against an accuracy guardrail (rolled back and retried smaller when it fails), then a final
fine-tune and the test evaluation. Checkpointed after every step; ``resume`` continues.

Decisions use the validation split only; the test split is evaluated for the report (dense and
final model). Every energy figure is the estimate under the profile unless a meter was read
(``energy_measured``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.energy.quantity import Estimated, Measured, energy_from_dict
from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_write_text, read_text
from energyprune.models.placement import example_input
from energyprune.pipeline.config import RunConfig
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import Metrics, evaluate, top1
from energyprune.pipeline.finetune import StopFlag, finetune, is_main_process
from energyprune.pipeline.recover import Teacher, state_digest
from energyprune.pipeline.steps import estimate_j, merge_plans, take_step, untrained_guardrail
from energyprune.pruning.export import save
from energyprune.pruning.plan import PruningPlan
from energyprune.reports.report import fmt_joules

__all__ = ["RunConfig", "RunResult", "run", "schedule_targets"]

STATE = "checkpoint.json"


def schedule_targets(cfg: RunConfig) -> list[float]:
    """Energy fraction after each step: 1 → target, linearly or cubically (TF-MOT's
    PolynomialDecay with power 3: big steps first, small ones near the end; ``gradual`` steps
    follow the cubic targets and cut inside each step's fine-tune)."""
    out = []
    for k in range(1, cfg.steps + 1):
        t = k / cfg.steps
        progress = t if cfg.schedule == "linear" else 1 - (1 - t) ** 3
        out.append(1 - (1 - cfg.target_energy) * progress)
    return out


@dataclass
class RunResult:
    """The final model, its accumulated plan and the report dict."""

    model: nn.Module
    plan: PruningPlan | None
    report: dict[str, Any]

    def plan_for(self, arch: str, hardware: str, input_shape: tuple[int, ...]) -> PruningPlan:
        """The plan to save beside the model, naming ``arch`` — an unpruned plan when no step
        was accepted."""
        plan = self.plan or PruningPlan.unpruned(self.model, arch, input_shape, hardware)
        plan.arch = {"name": arch}
        return plan


def _val_top1(model: nn.Module, data: Data) -> float:
    return top1(model, data.val, data.num_classes)


def _metrics(model: nn.Module, data: Data, cfg: RunConfig, meter: str | None) -> Metrics:
    example = example_input(model, data.input_shape)
    loader = data.test if data.test is not None else data.val
    return evaluate(model, loader, data.num_classes, example, cfg.hardware, meter)


def _checkpoint(
    out: Path, state: dict, model: nn.Module | None, plan: PruningPlan | None, arch: str
) -> None:
    """Weights and plan under step-numbered names first, then the state naming them (the dense
    baseline, step 0, is the state alone: its model is the one the run is given)."""
    if not is_main_process():
        return
    if model is not None:
        step = state["completed"]
        save(RunResult(model, plan, {}), out / "checkpoint" / f"step-{step}", arch=arch)
    atomic_write_text(out / STATE, json.dumps(state, indent=2) + "\n")


def _restore(out: Path, arch: str, dense: nn.Module) -> tuple[dict, nn.Module, PruningPlan | None]:
    from energyprune.pruning.export import load
    from energyprune.pruning.sparse import remask

    try:
        state = json.loads(read_text(out / STATE, "checkpoint"))
        completed = int(state["completed"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{out / STATE} is damaged ({type(e).__name__}: {first_line(e)}): run again "
            "without --resume, or with another --out"
        ) from None
    if completed == 0:  # killed during step 1: the baseline holds if the dense model is the same
        if state.get("dense_digest") != state_digest(dense):
            raise ConfigError(
                f"the dense baseline in {out} was made from other weights: resume with the "
                "same model and --weights, or run again without --resume"
            )
        return state, dense, None
    model, plan = load(out / "checkpoint" / f"step-{completed}")
    remask(model, plan)
    if plan.arch.get("name") != arch:
        raise ConfigError(f"checkpoint in {out} is for '{plan.arch.get('name')}', not '{arch}'")
    return state, model, plan


def _step(current, data, cfg: RunConfig, state, dense_j, teacher, stop, on_batch, log):
    """Step ``state['completed'] + 1`` with the guardrail: each failed attempt retries a
    smaller cut. Returns the accepted outcome, None when interrupted, or the last outcome with
    ``state['stopped']`` set when the step cannot be taken."""
    k = state["completed"] + 1
    fraction = schedule_targets(cfg)[k - 1]
    start_j = estimate_j(current, data, cfg, type(current).__name__)
    outcome = None
    for attempt in range(cfg.retries + 1):
        log(f"step {k}/{cfg.steps} attempt {attempt}: cutting to {fraction:.3f} of dense energy")
        try:
            outcome = take_step(
                current,
                data,
                cfg,
                target_j=fraction * dense_j,
                start_j=start_j,
                dense_j=dense_j,
                seed=cfg.seed * 100_003 + k * 101 + attempt,
                teacher=teacher,
                stop=stop,
                on_batch=on_batch,
            )
        except ConfigError as e:  # unreachable: keep the best model so far
            state["stopped"] = f"step {k}: {e}"
            return outcome
        if not outcome.completed:
            return None
        val = _val_top1(outcome.model, data)
        drop = 100 * (state["dense_val_top1"] - val)
        record = {
            "step": k,
            "attempt": attempt,
            "target_fraction": fraction,
            "energy_fraction": outcome.energy_j / dense_j,
            **outcome.record,
            "val_top1": val,
            "val_drop_pt": drop,
            "accepted": drop <= cfg.max_acc_drop,
        }
        state["steps"].append(record)
        log(
            f"step {k}/{cfg.steps} attempt {attempt}: energy "
            f"{record['energy_fraction']:.3f} of dense (estimated), val top-1 "
            f"{100 * val:.2f} % (drop {drop:.2f} pt, guardrail {cfg.max_acc_drop} pt)"
        )
        if record["accepted"]:
            state["fraction"] = fraction
            return outcome
        fraction = state["fraction"] - (state["fraction"] - fraction) / 2  # backtrack
    state["stopped"] = f"step {k}: guardrail failed after {cfg.retries + 1} attempts"
    return outcome


def run(
    model: nn.Module,
    data: Data,
    cfg: RunConfig,
    out: str | Path,
    *,
    arch: str,
    resume: bool = False,
    meter_device: str | None = None,
    log: Callable[[str], None] = print,
    on_batch: Callable[[int, int, int, float], None] = lambda epoch, i, n, loss: None,
    on_step: Callable[[int, int], None] = lambda done, total: None,
) -> RunResult:
    """Prune ``model`` toward ``cfg.target_energy`` in steps with fine-tuning and a guardrail.

    Args:
        model: the trained dense model (its architecture spec is ``arch``).
        data: loaders (validation drives decisions; test is for the report).
        out: run folder (checkpoint, report).
        arch: model spec to rebuild the architecture on resume and load.
        resume: continue after the last completed step recorded in ``out``.
        meter_device: read a meter there for the before/after energy, if one exists.
    """
    out = Path(out)
    stop = StopFlag()
    dense_j = estimate_j(model, data, cfg, arch)
    state, current, plan = _start(model, data, cfg, out, arch, resume, meter_device, log, dense_j)
    # the dense model, frozen once for the run (also on --resume), checked after every fine-tune
    frozen = Teacher(model) if cfg.distill else None
    teacher = frozen.module if frozen is not None else None
    with stop.installed():
        while state["completed"] < cfg.steps and state["stopped"] is None:
            step = _step(current, data, cfg, state, dense_j, teacher, stop, on_batch, log)
            if frozen is not None:
                frozen.check()
            if step is None:
                log("interrupted: the last completed step is checkpointed; use --resume")
                return RunResult(current, plan, {})
            if state["stopped"] is not None:
                log(f"stopped early ({state['stopped']}): keeping step {state['completed']}")
                break
            current, plan = step.model, merge_plans(plan, step.plan)
            state["completed"] += 1
            _checkpoint(out, state, current, plan, arch)
            on_step(state["completed"], cfg.steps)
        if plan is not None and not _final_finetune(current, data, cfg, teacher, stop, on_batch):
            log("interrupted during the final fine-tune; the last step is checkpointed")
            return RunResult(current, plan, {})
        if frozen is not None:
            frozen.check()
    if plan is not None:
        plan.spec = cfg.spec.to_dict()  # what the run asked for (each step pruned to its share)
    after = _metrics(current, data, cfg, meter_device)
    report = _report(state, after, cfg)
    report["validation"] = data.val_source
    return RunResult(current, plan, report)


def _start(
    model,
    data: Data,
    cfg: RunConfig,
    out: Path,
    arch: str,
    resume: bool,
    meter_device,
    log,
    dense_j: float,
) -> tuple[dict, nn.Module, PruningPlan | None]:
    """The run's state, model and plan so far: restored from ``out`` on ``resume``, else the
    dense model measured before any cut."""
    if resume and (out / STATE).is_file():
        state, current, plan = _restore(out, arch, model)
        made_with = state.get("validation", data.val_source)
        if made_with != data.val_source:  # the guardrail's baseline is that split's top-1
            raise ConfigError(
                f"the checkpoint in {out} was validated on {made_with}, this run on "
                f"{data.val_source}: resume with the same --val-from and --seed"
            )
        log(
            f"resuming after step {state['completed']} of {cfg.steps} (dense baseline from "
            f"{out / STATE}: val top-1 {100 * state['dense_val_top1']:.2f} %)"
        )
        return state, current, plan
    if resume:
        log(f"nothing to resume in {out}: starting from the dense model")
    log(f"dense baseline: evaluating {arch} on validation and test")
    dense_val = _val_top1(model, data)
    untrained_guardrail(model, data, cfg, schedule_targets(cfg)[0], dense_j, dense_val)
    before = _metrics(model, data, cfg, meter_device)
    state = {
        "completed": 0,
        "fraction": 1.0,
        "dense_val_top1": dense_val,
        "dense_digest": state_digest(model),
        "validation": data.val_source,
        "before": before.to_dict(),
        "steps": [],
        "stopped": None,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    _checkpoint(out, state, None, None, arch)  # a kill during step 1 keeps the baseline
    log(
        f"dense baseline: val top-1 {100 * dense_val:.2f} %, test top-1 {100 * before.top1:.2f} %,"
        f" {fmt_joules(before.energy.joules)} {before.energy.label}; checkpointed in "
        f"{out / STATE}"
    )
    return state, model, None


def _final_finetune(model, data: Data, cfg: RunConfig, teacher, stop, on_batch) -> bool:
    """The last fine-tune (``final_epochs``, its own seed); False when interrupted."""
    final_cfg = replace(
        cfg.train,
        epochs=cfg.final_epochs if cfg.final_epochs is not None else cfg.train.epochs,
        seed=cfg.seed * 100_003 + 7,
    )
    return finetune(model, data.train, final_cfg, teacher=teacher, stop=stop, on_batch=on_batch)


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


def _report(state: dict, after: Metrics, cfg: RunConfig) -> dict[str, Any]:
    before = state["before"]
    keys = (
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
    b = {k: before[k] for k in keys} | {"latency_noise": before.get("latency_noise")}
    a = {k: after.to_dict()[k] for k in (*keys, "latency_noise")}
    ratio, basis = _energy_ratio(before, after)
    return {
        "before": b,
        "after": a,
        "steps": state["steps"],
        "dense_val_top1": state["dense_val_top1"],
        "energy_reduction": 1 - ratio,
        "accuracy_drop": 100 * (b["top1"] - a["top1"]),
        "energy_basis": basis,
        "stopped_early": state["stopped"],
        "config": state["config"],
    }
