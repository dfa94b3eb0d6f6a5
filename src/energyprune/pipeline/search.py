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
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from energyprune.energy.hardware import load_hardware
from energyprune.energy.noise import TOO_NOISY
from energyprune.energy.quantity import Estimated, Measured, energy_from_dict
from energyprune.errors import ConfigError
from energyprune.files import atomic_path, atomic_write_text
from energyprune.models.placement import example_input
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import Timing, time_forward, top1
from energyprune.pipeline.finetune import OnBatch, TrainConfig, finetune
from energyprune.pruning.apply import prune
from energyprune.pruning.spec import PruneSpec

__all__ = [
    "OBJECTIVES",
    "SearchResult",
    "check_precisions",
    "collect",
    "knee",
    "open_study",
    "pareto_front",
    "plot_front",
    "search",
]

#: objective → optimisation direction
OBJECTIVES = {
    "accuracy": "maximize",
    "perplexity": "minimize",
    "energy": "minimize",
    "latency": "minimize",
}
_VALUE_KEYS = {
    "accuracy": "accuracy",
    "perplexity": "perplexity",
    "energy": "energy_j",
    "latency": "latency_ms",
}
DEFAULT_PROXY = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw")


@dataclass
class SearchResult:
    """Every complete trial, which of them form the Pareto front, and its knee."""

    objectives: list[str]
    trials: list[dict[str, Any]]
    knee: int | None
    energy_basis: str
    storage: str
    study_name: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def front(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["pareto"]]

    @property
    def noisy_front(self) -> list[int]:
        """Front trials whose latency reading was too noisy to rank them by (numbers)."""
        return [t["number"] for t in self.front if t.get("latency_noisy")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": self.objectives,
            "trials": self.trials,
            "knee": self.knee,
            "energy_basis": self.energy_basis,
            "storage": self.storage,
            "study_name": self.study_name,
            **self.extra,
        }


def _stages(model: nn.Module) -> list[str]:
    """Top-level children holding convolutions or linears: the 'stages' caps apply to."""
    return [
        name
        for name, child in model.named_children()
        if any(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in child.modules())
        and sum(1 for m in child.modules() if isinstance(m, (nn.modules.conv._ConvNd,))) > 1
    ]


def _dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    better = [
        (x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions, strict=True)
    ]
    strictly = [
        (x > y) if d == "maximize" else (x < y) for x, y, d in zip(a, b, directions, strict=True)
    ]
    return all(better) and any(strictly)


def pareto_front(values: list[list[float]], directions: list[str]) -> list[bool]:
    """For each point, True when no other point dominates it."""
    return [
        not any(_dominates(other, v, directions) for j, other in enumerate(values) if j != i)
        for i, v in enumerate(values)
    ]


def knee(values: list[list[float]], directions: list[str]) -> int | None:
    """Index of the front point closest to the ideal point after min-max normalisation."""
    if not values:
        return None
    lows = [min(col) for col in zip(*values, strict=True)]
    highs = [max(col) for col in zip(*values, strict=True)]

    def distance(v: list[float]) -> float:
        total = 0.0
        for x, lo, hi, d in zip(v, lows, highs, directions, strict=True):
            span = (hi - lo) or 1.0
            gap = (hi - x) / span if d == "maximize" else (x - lo) / span
            total += gap * gap
        return math.sqrt(total)

    return min(range(len(values)), key=lambda i: distance(values[i]))


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
    from energyprune.energy.model import profile

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
    from energyprune.energy.measure import measure

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


def _objective(
    dense: nn.Module,
    data: Data,
    hardware: str,
    proxy: TrainConfig,
    stages: list[str],
    target_range: tuple[float, float],
    objectives: list[str],
    meter_device: str | None,
    log: Callable[[str], None],
    precisions: tuple[str, ...] = ("fp32",),
    on_batch: OnBatch = lambda epoch, i, n, loss: None,
):
    example = example_input(dense, data.input_shape)
    alignments = [1, 4, 8] if load_hardware(hardware).channel_multiple <= 8 else [1, 8, 16]

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        params = {
            "target_energy": trial.suggest_float("target_energy", *target_range),
            "criterion": trial.suggest_categorical("criterion", ["energy", "l2", "l1"]),
            "strategy": trial.suggest_categorical("strategy", ["global", "layerwise-energy"]),
            "round_to": trial.suggest_categorical("round_to", alignments),
        }
        precision = precisions[0]
        if len(precisions) > 1:
            precision = trial.suggest_categorical("precision", list(precisions))
        caps = {s: trial.suggest_float(f"cap_{s}", 0.3, 0.9) for s in stages}
        spec = PruneSpec(**params, hardware=hardware, layer_caps=caps)
        trial.set_user_attr("spec", spec.to_dict())  # what --finalize replays
        try:
            result = prune(copy.deepcopy(dense), example, spec=spec)
        except ConfigError as e:
            raise optuna.TrialPruned(str(e)) from e
        log(
            f"trial {trial.number}: pruned to {params['target_energy']:.3f} of dense energy, "
            "fine-tuning (proxy)"
        )
        finetune(
            result.model,
            data.train,
            TrainConfig(**{**proxy.__dict__, "seed": trial.number}),
            on_batch=on_batch,
        )
        scored, energy, timing = _scored(
            result.model,
            result.after.total.energy_j,
            precision,
            data,
            example,
            hardware,
            len(precisions) > 1,
        )
        figure = _figure(
            scored, example, Estimated(energy, hardware), meter_device, len(precisions) > 1
        )
        values = {
            "accuracy": top1(scored, data.val, data.num_classes),
            "energy_j": figure.joules,
            "latency_ms": timing.median_ms,
        }
        trial.set_user_attr("energy", figure.to_dict())
        trial.set_user_attr("values", values)
        trial.set_user_attr("macs", result.after.total.macs)
        trial.set_user_attr("precision", precision)
        trial.set_user_attr("latency_noisy", timing.noise.reason)
        noisy = f" ({TOO_NOISY}: {timing.noise.reason})" if timing.noise.noisy else ""
        log(
            f"trial {trial.number} ({precision}): val top-1 {100 * values['accuracy']:.2f} %, "
            f"energy {values['energy_j']:.4g} J, latency {values['latency_ms']:.3f} ms{noisy}"
        )
        return tuple(values[_VALUE_KEYS[o]] for o in objectives)

    return objective


def collect(study: optuna.Study, objectives: list[str]) -> tuple[list[dict], int | None]:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    directions = [OBJECTIVES[o] for o in objectives]
    values = [list(t.values) for t in complete]
    flags = pareto_front(values, directions)
    trials = [
        {
            "number": t.number,
            "params": t.params,
            "values": t.user_attrs["values"],
            "spec": t.user_attrs.get("spec"),
            "macs": t.user_attrs.get("macs"),
            "precision": t.user_attrs.get("precision", "fp32"),
            "latency_noisy": t.user_attrs.get("latency_noisy"),
            "pareto": flag,
        }
        for t, flag in zip(complete, flags, strict=True)
    ]
    front = [i for i, f in enumerate(flags) if f]
    k = knee([values[i] for i in front], directions)
    return trials, (complete[front[k]].number if k is not None else None)


def search(
    dense: nn.Module,
    data: Data,
    out: str | Path,
    *,
    trials: int = 20,
    objectives: tuple[str, ...] = ("accuracy", "energy", "latency"),
    target_range: tuple[float, float] = (0.2, 0.9),
    proxy: TrainConfig = DEFAULT_PROXY,
    hardware: str = "horowitz-45nm",
    storage: str | None = None,
    study_name: str = "energyprune",
    n_jobs: int = 1,
    seed: int = 0,
    meter_device: str | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    log: Callable[[str], None] = lambda message: None,
    on_batch: OnBatch = lambda epoch, i, n, loss: None,
) -> SearchResult:
    """Run (or continue) the study until it holds ``trials`` complete trials; write
    ``pareto.json`` and ``pareto.png`` in ``out``.

    Args:
        dense: the trained dense model.
        data: loaders; trials are scored on validation.
        objectives: any of accuracy, energy, latency.
        target_range: range of the energy target (fraction of the dense estimate).
        proxy: the short fine-tune each trial gets.
        storage: optuna storage URL (default ``sqlite:///DIR/study.db``); share it between
            workers to search in parallel.
        precisions: ``("fp32",)`` or ``("fp32", "int8")``: int8 adds the precision dimension
            (post-training x86 int8, CPU); latency is then measured compiled for every trial.
    """
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or len(objectives) < 2:
        raise ConfigError(
            f"objectives must be two or more of {', '.join(OBJECTIVES)}, got {','.join(objectives)}"
        )
    check_precisions(precisions, meter_device)
    lo, hi = target_range
    if not 0 < lo < hi <= 1:
        raise ConfigError(f"target range must satisfy 0 < low < high <= 1, got {lo}:{hi}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    objectives = list(objectives)
    study = open_study(url, study_name, objectives, list(precisions), seed, trials)
    stop = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))
    objective = _objective(
        dense.eval(),
        data,
        hardware,
        proxy,
        _stages(dense),
        target_range,
        objectives,
        meter_device,
        log,
        tuple(precisions),
        on_batch,
    )
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if done < trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # pruned (unreachable) trials do not count: allow some, the callback stops the study
        study.optimize(
            objective,
            n_trials=3 * (trials - done),
            n_jobs=n_jobs,
            callbacks=[stop],
            catch=(RuntimeError,),
        )
    rows, knee_number = collect(study, objectives)
    basis = _basis(study, hardware)
    result = SearchResult(
        objectives, rows, knee_number, basis, url, study_name, {"validation": data.val_source}
    )
    atomic_write_text(out / "pareto.json", json.dumps(result.to_dict(), indent=2) + "\n")
    plot_front(result, out / "pareto.png")
    return result


def open_study(
    url: str, name: str, objectives: list[str], precisions: list[str], seed: int, trials: int
) -> optuna.Study:
    """The study at ``url`` (created, or continued when its objectives and precisions match)."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in optuna, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
    study = optuna.create_study(
        study_name=name,
        storage=rdb,
        load_if_exists=True,
        directions=[OBJECTIVES[o] for o in objectives],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials))),
    )
    for key, value, what in (
        ("objectives", objectives, "optimises"),
        ("precisions", precisions, "searches precisions"),
    ):
        stored = study.user_attrs.get(key)
        if stored is not None and stored != value:
            raise ConfigError(
                f"study '{name}' {what} {stored}, not {value}: use another --out / --study-name"
            )
        study.set_user_attr(key, value)
    return study


def plot_front(result: SearchResult, path: Path) -> None:
    """Pairwise projections of all trials with the front (and its knee) highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [_VALUE_KEYS[o] for o in result.objectives]
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 4), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        for subset, style in (
            ([t for t in result.trials if not t["pareto"]], "o"),
            (result.front, "s"),
        ):
            ax.scatter(
                [t["values"][a] for t in subset],
                [t["values"][b] for t in subset],
                marker=style,
                alpha=0.5 if style == "o" else 1.0,
                label="front" if style == "s" else "other trials",
            )
        knee_trial = [t for t in result.trials if t["number"] == result.knee]
        if knee_trial:
            ax.scatter(
                [knee_trial[0]["values"][a]],
                [knee_trial[0]["values"][b]],
                marker="*",
                s=200,
                color="red",
                label="knee",
            )
        ax.set_xlabel(a + (f" ({result.energy_basis})" if a == "energy_j" else ""))
        ax.set_ylabel(b + (f" ({result.energy_basis})" if b == "energy_j" else ""))
        ax.legend(fontsize=7)
    fig.suptitle(f"Pruning search: validation {' × '.join(result.objectives)}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
