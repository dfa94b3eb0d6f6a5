"""The settings of one prune → fine-tune → evaluate run (its own module: the loop and its
steps both read it)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from energyprune.errors import ConfigError
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pruning.spec import PruneSpec

__all__ = ["SCHEDULES", "RunConfig"]

SCHEDULES = ("linear", "cubic", "gradual")


@dataclass(frozen=True)
class RunConfig:
    """Settings of one prune → fine-tune → evaluate run."""

    target_energy: float = 0.5
    steps: int = 3
    schedule: str = "cubic"
    max_acc_drop: float = 0.5  # percentage points of validation top-1
    retries: int = 2
    train: TrainConfig = field(default_factory=TrainConfig)
    final_epochs: int | None = None  # default: train.epochs
    spec: PruneSpec = field(default_factory=PruneSpec)  # each step's target is the schedule's
    seed: int = 0
    bn_batches: int = 50  # batch-norm recalibration after every cut (0: off)
    distill: bool = True  # fine-tune with the dense model as teacher
    candidates: int = 1  # ways to meet each step's budget, scored after recalibration

    @property
    def hardware(self) -> str:
        """The profile every estimate of the run is priced under (the spec's)."""
        return str(self.spec.hardware)

    def __post_init__(self) -> None:
        if (self.spec.target_energy, self.spec.max_joules) != (self.target_energy, None):
            # the run's target is the spec's (steps prune to the schedule's share of it)
            spec = replace(self.spec, target_energy=self.target_energy, max_joules=None)
            object.__setattr__(self, "spec", spec)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.steps < 1 or not 0 < self.target_energy <= 1 or self.max_acc_drop < 0:
            raise ConfigError("need steps >= 1, 0 < target_energy <= 1 and max_acc_drop >= 0")
        if self.bn_batches < 0 or self.candidates < 1:
            raise ConfigError(
                f"need bn_batches >= 0 and candidates >= 1, got {self.bn_batches}, "
                f"{self.candidates}"
            )
        if self.candidates > 1 and self.schedule == "gradual":
            raise ConfigError(
                "candidates are scored after a one-shot cut: use --schedule cubic or linear "
                "with --candidates, or drop --candidates"
            )
