"""The settings of one prune → fine-tune → evaluate run (its own module: the loop and its
steps both read it)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from energyprune.errors import ConfigError
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pruning.spec import PruneSpec

__all__ = ["SCHEDULES", "RunConfig", "schedule_targets"]

SCHEDULES = ("linear", "cubic", "gradual")


@dataclass(frozen=True)
class RunConfig:
    """Settings of one prune → fine-tune → evaluate run."""

    target_energy: float = None  # type: ignore[assignment]  # default: the spec's (0.5)
    steps: int = 3
    schedule: str = "cubic"
    max_acc_drop: float = 0.5  # percentage points of validation top-1
    retries: int = 2
    train: TrainConfig = field(default_factory=TrainConfig)
    final_epochs: int | None = None  # default: train.epochs
    spec: PruneSpec = None  # type: ignore[assignment]  # default: PruneSpec(target_energy)
    seed: int = 0
    seeds: int = 1  # runs from seed, seed + 1, ...: the first is reported, all give stability
    bn_batches: int = 50  # batch-norm recalibration after every cut (0: off)
    distill: bool = True  # fine-tune with the dense model as teacher
    candidates: int = 1  # ways to meet each step's budget, scored after recalibration
    score_batches: int = 8  # training batches that score channels for gradient criteria

    @property
    def hardware(self) -> str:
        """The profile every estimate of the run is priced under (the spec's)."""
        return str(self.spec.hardware)

    def with_target(self, target_energy: float) -> RunConfig:
        """This run aimed at another fraction of dense energy (its spec follows)."""
        spec = replace(self.spec, target_energy=target_energy)
        return replace(self, target_energy=target_energy, spec=spec)

    def __post_init__(self) -> None:
        spec = self.spec
        if spec is None:
            target = 0.5 if self.target_energy is None else self.target_energy
            spec = PruneSpec(target_energy=target)
        elif spec.max_joules is not None:
            raise ConfigError(
                "a run prunes to a fraction of dense energy: give target_energy "
                "(--target-energy), not max_joules (--max-joules is for a prune without --data)"
            )
        elif self.target_energy is not None and self.target_energy != spec.target_energy:
            raise ConfigError(
                f"the run's target_energy {self.target_energy} disagrees with its spec's "
                f"{spec.target_energy}: give the target once (either, or both equal)"
            )
        # the run's target is the spec's (steps prune to the schedule's share of it)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "target_energy", spec.target_energy)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.steps < 1 or not 0 < self.target_energy <= 1 or self.max_acc_drop < 0:
            raise ConfigError("need steps >= 1, 0 < target_energy <= 1 and max_acc_drop >= 0")
        if self.bn_batches < 0 or min(self.candidates, self.score_batches, self.seeds) < 1:
            raise ConfigError(
                "need bn_batches >= 0, candidates >= 1, score_batches >= 1 and seeds >= 1, got "
                f"{self.bn_batches}, {self.candidates}, {self.score_batches}, {self.seeds}"
            )
        if self.candidates > 1 and self.schedule == "gradual":
            raise ConfigError(
                "candidates are scored after a one-shot cut: use --schedule cubic or linear "
                "with --candidates, or drop --candidates"
            )


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
