"""What differs between kinds of model, behind one protocol the run loop calls.

The run loop (:mod:`energyprune.pipeline.run`) keeps the schedule, the guardrail, the frozen
teacher, the stop flag, checkpoint and resume, seeds and the report; a :class:`ModelKind`
says how its models are priced, scored, cut, trained, saved, loaded and reported. An image
classifier (:mod:`energyprune.pipeline.image_kind`) and a decoder LM
(:mod:`energyprune.pipeline.lm_kind`) are the two kinds today; a new kind is one more adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from energyprune.pipeline.finetune import OnBatch, StopFlag, TrainConfig

if TYPE_CHECKING:
    from energyprune.pipeline.config import RunConfig

__all__ = [
    "AccuracyDrop",
    "Guardrail",
    "ModelKind",
    "PerplexityRise",
    "StepOutcome",
    "StepTarget",
    "Verdict",
]


@dataclass(frozen=True)
class Verdict:
    """A guardrail's judgement of one model against the dense one."""

    held: bool
    line: str  # what the log and the report say
    record: dict[str, float]  # what a step's record keeps of it


class Guardrail(Protocol):
    """How far quality may fall from dense, in the kind's own metric (``metric``, an
    objective name of the search, and whether more of it is better)."""

    metric: str
    higher_is_better: bool

    def check(self, dense: float, after: float) -> Verdict: ...

    def describe(self) -> str: ...

    def show(self, value: float) -> str: ...


@dataclass(frozen=True)
class AccuracyDrop:
    """Validation top-1 may drop at most ``max_pt`` percentage points."""

    max_pt: float = 0.5
    metric = "accuracy"
    higher_is_better = True

    def check(self, dense: float, after: float) -> Verdict:
        drop = 100 * (dense - after)
        line = f"val top-1 {100 * after:.2f} % (drop {drop:.2f} pt, guardrail {self.max_pt} pt)"
        return Verdict(drop <= self.max_pt, line, {"val_top1": after, "val_drop_pt": drop})

    def describe(self) -> str:
        return f"validation top-1 drops at most {self.max_pt} pt"

    def show(self, value: float) -> str:
        return f"val top-1 {100 * value:.2f} %"


@dataclass(frozen=True)
class PerplexityRise:
    """Perplexity may rise at most ``max_pct`` percent over dense."""

    max_pct: float = 10.0
    metric = "perplexity"
    higher_is_better = False

    def check(self, dense: float, after: float) -> Verdict:
        rise = 100 * (after / dense - 1)
        held = rise <= self.max_pct
        verdict = "held" if held else "FAILED"
        line = (
            f"guardrail {verdict}: perplexity {dense:.2f} → {after:.2f} ({rise:+.1f} %, "
            f"limit +{self.max_pct:g} %)"
        )
        return Verdict(held, line, {"val_ppl": after, "val_ppl_rise_pct": rise})

    def describe(self) -> str:
        return f"perplexity rises at most {self.max_pct:g} %"

    def show(self, value: float) -> str:
        return f"perplexity {value:.2f}"


@dataclass(frozen=True)
class StepTarget:
    """One attempt at one step: cut to ``target_j`` from ``start_j`` (estimated, in the kind's
    unit), then recover with ``train``."""

    target_j: float
    start_j: float
    dense_j: float
    train: TrainConfig


@dataclass
class StepOutcome:
    """A step's model, its plan, its estimated energy and what the report shows of it."""

    model: nn.Module
    plan: Any
    energy_j: float
    completed: bool
    record: dict[str, Any] = field(default_factory=dict)


class ModelKind(Protocol):
    """Everything the run loop needs to know about a kind of model."""

    arch: str  # the model spec: rebuilds the architecture on resume and load
    guardrail: Guardrail
    validation: str  # where decisions are scored (a resumed run must use the same)

    def price(self, model: nn.Module) -> float:
        """Estimated energy (per forward pass, or per token) under the run's profile."""

    def meets_budget(self, fraction: float, target: float) -> bool:
        """Whether a priced ``fraction`` of dense energy meets ``target`` (the kind's cut
        allows itself this much slack, so the outcome does too)."""

    def validate(self, model: nn.Module) -> float:
        """Quality on the decision split, in the guardrail's metric."""

    def baseline(self, model: nn.Module) -> dict[str, Any]:
        """The dense model's report figures (test split, energy)."""

    def baseline_line(self, before: dict[str, Any], dense_val: float) -> str:
        """One line on the dense baseline for the log."""

    def refuse_early(self, model: nn.Module, cfg: RunConfig, dense_j: float, dense_val: float):
        """Raise ConfigError when no step can pass (checked before the first cut)."""

    def step(
        self,
        model: nn.Module,
        cfg: RunConfig,
        target: StepTarget,
        teacher: nn.Module | None,
        stop: StopFlag,
        on_batch: OnBatch,
    ) -> StepOutcome:
        """Cut ``model`` to ``target`` and recover; ConfigError when it cannot be reached."""

    def finetune(
        self,
        model: nn.Module,
        plan: Any,
        train: TrainConfig,
        teacher: nn.Module | None,
        stop: StopFlag,
        on_batch: OnBatch,
    ) -> bool:
        """Train ``model`` (cut as ``plan`` says) in place with the kind's batch loss; False
        when stopped."""

    def merge(self, plan: Any, step: Any) -> Any:
        """The run's plan so far with ``step``'s after it."""

    def save(self, model: nn.Module, plan: Any, folder: Path) -> None:
        """A checkpoint of ``model`` and its plan in ``folder``."""

    def load(self, folder: Path) -> tuple[nn.Module, Any]:
        """What :meth:`save` wrote."""

    def final_plan(self, plan: Any, cfg: RunConfig) -> Any:
        """The plan a finished run saves."""

    def report(
        self, state: Any, model: nn.Module, plan: Any, cfg: RunConfig, outcome: dict[str, Any]
    ) -> dict[str, Any]:
        """The final report of a run that ended in ``model``; ``outcome`` is the loop's
        verdict on it (its validation quality and estimated energy, already measured)."""

    def quality_of(self, report: dict[str, Any]) -> float:
        """The reported quality of a finished run (several seeds give its spread)."""

    def write(self, result: Any, out: Path, dense: nn.Module) -> None:
        """The run's outputs (model, plan, report.json, report.md, ...) into ``out``."""

    def with_seed(self, seed: int) -> ModelKind:
        """This kind for a run with another seed."""


#: logs a line of the run's progress
Log = Callable[[str], None]
