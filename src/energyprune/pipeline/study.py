"""A search's optuna study and its Pareto front, for every kind of model: the objectives and
their directions, the study (created or continued, refusing other objectives), the front of
the complete trials, its knee, and the plot. :mod:`energyprune.pipeline.search` (images) and
:mod:`energyprune.pipeline.kind_search` (any kind through the run loop) fill it."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from energyprune.errors import ConfigError
from energyprune.files import atomic_path

__all__ = [
    "OBJECTIVES",
    "VALUE_KEYS",
    "SearchResult",
    "SearchSpec",
    "collect",
    "knee",
    "open_study",
    "pareto_front",
    "plot_front",
]


#: objective → optimisation direction
OBJECTIVES = {
    "accuracy": "maximize",
    "perplexity": "minimize",
    "energy": "minimize",
    "latency": "minimize",
}
VALUE_KEYS = {
    "accuracy": "accuracy",
    "perplexity": "perplexity",
    "energy": "energy_j",
    "latency": "latency_ms",
}


@dataclass(frozen=True)
class SearchSpec:
    """What every search asks: how many complete trials, the range of the energy target
    (fraction of dense), the optuna storage (default ``sqlite:///DIR/study.db``; share it
    between workers to search in parallel), the study's name and the sampler's seed."""

    trials: int = 12
    target_range: tuple[float, float] = (0.5, 0.95)
    storage: str | None = None
    study_name: str = "energyprune"
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.target_range
        if not 0 < lo < hi <= 1:
            raise ConfigError(f"target range must satisfy 0 < low < high <= 1, got {lo}:{hi}")
        if self.trials < 1:
            raise ConfigError(f"trials must be >= 1, got {self.trials}")


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

    keys = [VALUE_KEYS[o] for o in result.objectives]
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
