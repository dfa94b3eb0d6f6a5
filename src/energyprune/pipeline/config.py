"""The settings of one prune → fine-tune → evaluate run (its own module: the loop and its
steps both read it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from energyprune.errors import ConfigError
from energyprune.pipeline.finetune import TrainConfig

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
    granularity: str = "channel"
    criterion: str = "energy"
    strategy: str = "global"
    hardware: str = "horowitz-45nm"
    round_to: int | None = None
    max_layer_ratio: float = 0.9
    ignored_layers: tuple[str, ...] = ()
    prune_residual: bool = False
    nm: tuple[int, int] = (2, 4)
    seed: int = 0
    bn_batches: int = 50  # batch-norm recalibration after every cut (0: off)
    distill: bool = True  # fine-tune with the dense model as teacher
    candidates: int = 1  # ways to meet each step's budget, scored after recalibration

    def __post_init__(self) -> None:
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
