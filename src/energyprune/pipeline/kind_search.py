"""A Pareto search for any kind of model, each trial one run of the one loop.

Each trial samples an energy target and one of the kind's cut choices (a language model's
method), runs :func:`~energyprune.pipeline.run.run_kind` for one step with the proxy recovery
(no guardrail: the front maps what each cut keeps) in ``DIR/trial-N``, and scores the kind's
quality on validation (perplexity for a language model) and its estimated energy. The study
lives in optuna storage as :func:`~energyprune.pipeline.search.search`'s does, and the front,
its knee, ``pareto.json`` and ``pareto.png`` are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from torch import nn

from energyprune.files import atomic_write_text
from energyprune.pipeline.config import RunConfig
from energyprune.pipeline.finetune import OnBatch
from energyprune.pipeline.run import Hooks, run_kind
from energyprune.pipeline.study import (
    SearchResult,
    SearchSpec,
    collect,
    open_study,
    plot_front,
)

__all__ = ["KindSearch", "search_kind"]


@dataclass(frozen=True)
class KindSearch(SearchSpec):
    """A search over a kind's cut choices (``choose(kind, value)`` makes the trial's kind)
    besides the energy target."""

    choice_name: str = "method"
    choice_values: Sequence[str] = ("energy", "depth", "width")


def _trial_config(base: RunConfig, target: float) -> RunConfig:
    """One step to ``target``, no retries, no final fine-tune; the guardrail never refuses."""
    return replace(base.with_target(target), steps=1, retries=0, final_epochs=0)


def search_kind(
    kind: Any,
    dense: nn.Module,
    base: RunConfig,
    out: str | Path,
    how: KindSearch,
    *,
    choose: Callable[[Any, str], Any],
    log: Callable[[str], None] = lambda line: None,
    on_batch: OnBatch = lambda epoch, i, n, loss: None,
) -> SearchResult:
    """Run (or continue) the study until it holds ``how.trials`` complete trials; write
    ``pareto.json`` and ``pareto.png`` in ``out``. ``choose(kind, value)`` is the kind for one
    value of the searched choice, its guardrail off."""
    lo, hi = how.target_range
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    objectives = [kind.guardrail.metric, "energy"]
    url = how.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our lines say what each trial did
    study = open_study(url, how.study_name, objectives, ["fp32"], how.seed, how.trials)
    hooks = Hooks(log=log, on_batch=on_batch)
    if not study.trials:  # a new study tries every choice once before the sampler picks
        for value in list(how.choice_values)[: how.trials]:
            study.enqueue_trial({how.choice_name: value})

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        target = trial.suggest_float("target_energy", lo, hi)
        value = trial.suggest_categorical(how.choice_name, list(how.choice_values))
        log(f"trial {trial.number}: {how.choice_name} {value}, target {target:.3f} of dense")
        cfg = _trial_config(base, target)
        folder = out / f"trial-{trial.number}"
        result = run_kind(choose(kind, value), dense, cfg, folder, hooks=hooks)
        if not result.report:
            raise KeyboardInterrupt
        outcome = result.report["outcome"]
        values = {objectives[0]: outcome["quality"], "energy_j": outcome["energy_j"]}
        trial.set_user_attr("values", values)
        trial.set_user_attr("spec", {"target_energy": target, how.choice_name: value})
        trial.set_user_attr("energy_fraction", outcome["energy_fraction"])
        log(
            f"trial {trial.number}: {objectives[0]} {outcome['quality']:.4g}, "
            f"{outcome['energy_fraction']:.3f} of dense energy (estimated)"
        )
        return outcome["quality"], outcome["energy_j"]

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if done < how.trials:
        study.optimize(objective, n_trials=how.trials - done)
    rows, knee_number = collect(study, objectives)
    for row, t in zip(rows, _complete(study), strict=True):
        row["energy_fraction"] = t.user_attrs.get("energy_fraction")
    basis = f"estimated ({base.hardware})"
    extra = {"validation": kind.validation}
    result = SearchResult(objectives, rows, knee_number, basis, url, how.study_name, extra)
    atomic_write_text(out / "pareto.json", json.dumps(result.to_dict(), indent=2) + "\n")
    plot_front(result, out / "pareto.png")
    return result


def _complete(study: optuna.Study) -> list[Any]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
