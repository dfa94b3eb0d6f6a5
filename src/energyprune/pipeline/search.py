"""Multi-objective pruning search: an accuracy × energy × latency Pareto front with optuna.

An NSGA-II study over the pruning configuration (energy target, criterion, strategy, width
alignment, per-stage caps). Each trial prunes the dense model, fine-tunes it for a short proxy
budget and scores *validation* accuracy; energy comes from the meter when the device has one,
else from the (calibrated) estimate — ``energy_basis`` says which; latency is measured.

The study lives in optuna storage (SQLite by default, ``DIR/study.db``): an interrupted search
resumes and continues its trial count, and several worker processes (or machines, with a shared
database URL) can work on one study — each stops when the study holds ``trials`` complete trials.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.measurement.noise import TOO_NOISY
from energyprune.energy.quantity import Estimated, Measured, energy_from_dict
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.options import build
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import Timing, time_forward, top1
from energyprune.pipeline.finetune import OnBatch, TrainConfig, finetune
from energyprune.pipeline.study import (
    OBJECTIVES,
    VALUE_KEYS,
    SearchResult,
    SearchSpec,
    collect,
    knee,
    open_study,
    pareto_front,
    plot_front,
)
from energyprune.pruning.apply import prune
from energyprune.pruning.spec import PruneSpec

__all__ = [
    "OBJECTIVES",
    "ImageSearch",
    "SearchResult",
    "check_precisions",
    "collect",
    "knee",
    "open_study",
    "pareto_front",
    "plot_front",
    "search",
]

DEFAULT_PROXY = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw")


def _stages(model: nn.Module) -> list[str]:
    """Top-level children holding convolutions or linears: the 'stages' caps apply to."""
    return [
        name
        for name, child in model.named_children()
        if any(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in child.modules())
        and sum(1 for m in child.modules() if isinstance(m, (nn.modules.conv._ConvNd,))) > 1
    ]


def check_precisions(precisions: tuple[str, ...], meter_device: str | None) -> None:
    """fp32 and/or int8; int8 trials run on the CPU, so their energy cannot be metered on a GPU.
    Called by the CLI too, before it spends time training the dense model."""
    if not precisions or not set(precisions) <= {"fp32", "int8"}:
        raise ConfigError(f"--precision takes fp32 and/or int8, got '{','.join(precisions)}'")
    if "int8" in precisions and meter_device not in (None, "cpu"):
        raise ConfigError(
            f"int8 trials run on the CPU (x86 PT2E): their energy cannot be compared with energy "
            f"metered on {meter_device}; search int8 on cpu"
        )


def _scored(
    model: nn.Module,
    fp32_j: float,
    precision: str,
    data: Data,
    example: torch.Tensor,
    hardware: str,
    compiled: bool,
) -> tuple[nn.Module, float, Timing]:
    """(module to score, estimated joules, latency ms) of a fine-tuned trial at ``precision``:
    int8 is post-training PT2E, priced as int8 in the same energy model; latency is measured
    compiled (with freezing) whenever int8 is in the search, so both precisions are timed alike."""
    from energyprune.deploy.quantize import quantize_int8
    from energyprune.deploy.runtime import compile_for_inference
    from energyprune.energy.pricing.estimates import profile

    energy = fp32_j
    if precision == "int8":
        q = quantize_int8(
            model, example_input(model, (4, *example.shape[1:])), data.val, max_batches=4
        )
        energy = profile(model, example, hardware, layer_dtypes=q.layer_dtypes).total.energy_j
        model = q.module
    timed = compile_for_inference(model) if compiled else model
    return model, energy, time_forward(timed, example, 15)


def _figure(
    model: nn.Module,
    example: torch.Tensor,
    estimate: Estimated,
    meter_device: str | None,
    compiled: bool,
) -> Estimated | Measured:
    """A trial's energy per forward pass of ``example``: measured where a meter is named (a
    trial whose reading fails is dropped: an estimate must not join measured trials), else the
    estimate."""
    if meter_device is None:
        return estimate
    from energyprune.energy.measurement.protocol import measure

    m = measure(model, example, device=meter_device, compile=compiled)
    if m.energy is None:
        raise optuna.TrialPruned(f"no meter reading on {meter_device} ({m.unavailable_reason})")
    return m.energy.scaled(example.shape[0])


def _basis(study: optuna.Study, hardware: str) -> str:
    """The label of the figures the completed trials actually hold (one label, or refused)."""
    labels = {
        energy_from_dict(t.user_attrs["energy"]).label
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "energy" in t.user_attrs
    }
    if len(labels) > 1:
        mixed = ", ".join(sorted(labels))
        raise ConfigError(
            f"the study mixes energy figures ({mixed}): use another --out / --study-name"
        )
    return labels.pop() if labels else f"estimated ({hardware})"


@dataclass(frozen=True)
class _Trials:
    """What every trial of one search shares."""

    dense: nn.Module
    data: Data
    how: ImageSearch
    stages: list[str]
    log: Callable[[str], None]
    on_batch: OnBatch
    example: torch.Tensor
    alignments: list[int]


def _sample(trial: optuna.Trial, setup: _Trials) -> tuple[PruneSpec, str]:
    """The trial's prune settings and precision."""
    params = {
        "target_energy": trial.suggest_float("target_energy", *setup.how.target_range),
        "criterion": trial.suggest_categorical("criterion", ["energy", "l2", "l1"]),
        "strategy": trial.suggest_categorical("strategy", ["global", "layerwise-energy"]),
        "round_to": trial.suggest_categorical("round_to", setup.alignments),
    }
    precisions = setup.how.precisions
    precision = precisions[0]
    if len(precisions) > 1:
        precision = trial.suggest_categorical("precision", list(precisions))
    caps = {s: trial.suggest_float(f"cap_{s}", 0.3, 0.9) for s in setup.stages}
    return PruneSpec(**params, hardware=setup.how.hardware, layer_caps=caps), precision


def _trial(trial: optuna.Trial, setup: _Trials) -> tuple[float, ...]:
    spec, precision = _sample(trial, setup)
    trial.set_user_attr("spec", spec.to_dict())  # what --finalize replays
    how = setup.how
    data, hardware, mixed = setup.data, how.hardware, len(how.precisions) > 1
    try:
        result = prune(copy.deepcopy(setup.dense), setup.example, spec=spec)
    except ConfigError as e:
        raise optuna.TrialPruned(str(e)) from e
    setup.log(
        f"trial {trial.number}: pruned to {spec.target_energy:.3f} of dense energy, "
        "fine-tuning (proxy)"
    )
    proxy = replace(how.proxy, seed=trial.number)
    finetune(result.model, data.train, proxy, on_batch=setup.on_batch)
    scored, energy, timing = _scored(
        result.model, result.after.total.energy_j, precision, data, setup.example, hardware, mixed
    )
    estimate = Estimated(energy, hardware)
    figure = _figure(scored, setup.example, estimate, how.meter_device, mixed)
    values = {
        "accuracy": top1(scored, data.val, data.num_classes),
        "energy_j": figure.joules,
        "latency_ms": timing.median_ms,
    }
    for key, value in (
        ("energy", figure.to_dict()),
        ("values", values),
        ("macs", result.after.total.macs),
        ("precision", precision),
        ("latency_noisy", timing.noise.reason),
    ):
        trial.set_user_attr(key, value)
    noisy = f" ({TOO_NOISY}: {timing.noise.reason})" if timing.noise.noisy else ""
    setup.log(
        f"trial {trial.number} ({precision}): val top-1 {100 * values['accuracy']:.2f} %, "
        f"energy {values['energy_j']:.4g} J, latency {values['latency_ms']:.3f} ms{noisy}"
    )
    return tuple(values[VALUE_KEYS[o]] for o in how.objectives)


def _optimize(study: optuna.Study, setup: _Trials) -> None:
    """Trials until the study holds ``trials`` complete ones (several workers may share it)."""
    trials, n_jobs = setup.how.trials, setup.how.n_jobs
    stop = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if done < trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # pruned (unreachable) trials do not count: allow some, the callback stops the study
        study.optimize(
            lambda trial: _trial(trial, setup),
            n_trials=3 * (trials - done),
            n_jobs=n_jobs,
            callbacks=[stop],
            catch=(RuntimeError,),
        )


@dataclass(frozen=True)
class ImageSearch(SearchSpec):
    """An image classifier's search: its objectives (any of accuracy, energy, latency), the
    short fine-tune each trial gets (``proxy``), the profile that prices it, worker threads,
    the device whose meter reads each trial's energy (None: estimated), and the precisions
    (``("fp32", "int8")`` adds post-training x86 int8 on the CPU; latency is then measured
    compiled for every trial)."""

    trials: int = 20
    target_range: tuple[float, float] = (0.2, 0.9)
    objectives: tuple[str, ...] = ("accuracy", "energy", "latency")
    proxy: TrainConfig = DEFAULT_PROXY
    hardware: str = "horowitz-45nm"
    n_jobs: int = 1
    meter_device: str | None = None
    precisions: tuple[str, ...] = ("fp32",)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or len(self.objectives) < 2:
            raise ConfigError(
                f"objectives must be two or more of {', '.join(OBJECTIVES)}, "
                f"got {','.join(self.objectives)}"
            )
        check_precisions(self.precisions, self.meter_device)


def search(
    dense: nn.Module,
    data: Data,
    out: str | Path,
    *,
    log: Callable[[str], None] = lambda message: None,
    on_batch: OnBatch = lambda epoch, i, n, loss: None,
    **settings: Any,
) -> SearchResult:
    """Run (or continue) the study until it holds ``trials`` complete trials; write
    ``pareto.json`` and ``pareto.png`` in ``out``.

    Args:
        dense: the trained dense model.
        data: loaders; trials are scored on validation.
        settings: the fields of :class:`ImageSearch` (``trials``, ``objectives``,
            ``target_range``, ``proxy``, ``hardware``, ``storage``, ``precisions``, ...).
    """
    how = build(ImageSearch, **settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = how.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    objectives = list(how.objectives)
    study = open_study(url, how.study_name, objectives, list(how.precisions), how.seed, how.trials)
    multiple = load_hardware(how.hardware).channel_multiple
    setup = _Trials(
        dense=dense.eval(),
        data=data,
        how=how,
        stages=_stages(dense),
        log=log,
        on_batch=on_batch,
        example=example_input(dense, data.input_shape),
        alignments=[1, 4, 8] if multiple <= 8 else [1, 8, 16],
    )
    _optimize(study, setup)
    rows, knee_number = collect(study, objectives)
    basis = _basis(study, how.hardware)
    result = SearchResult(
        objectives, rows, knee_number, basis, url, how.study_name, {"validation": data.val_source}
    )
    atomic_write_text(out / "pareto.json", json.dumps(result.to_dict(), indent=2) + "\n")
    plot_front(result, out / "pareto.png")
    return result
