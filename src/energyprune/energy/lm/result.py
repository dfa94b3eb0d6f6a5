"""What pricing a language model returns: per-pass and per-token estimates, never measurements."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from energyprune.energy.lm.graphs import GRAPHS, RUNTIMES
from energyprune.energy.lm.layer_split import SUMMED, LayerSplit
from energyprune.energy.lm.regimes import Regime
from energyprune.energy.lm.serving import Serving
from energyprune.energy.pricing.estimates import EnergyProfile

__all__ = ["LMPass", "LMProfile"]


@dataclass(frozen=True)
class LMPass:
    """One traced forward pass of a regime and how many times the regime runs it."""

    phase: str
    batch: int
    length: int  # prompt tokens (prefill) or cached tokens (decode)
    count: float
    profile: EnergyProfile = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        key = "prompt" if self.phase == "prefill" else "context"
        total = self.profile.total
        return {
            "phase": self.phase,
            "batch": self.batch,
            key: self.length,
            "count": self.count,
            "energy_j": total.energy_j,
            "seconds": total.seconds,
        }


@dataclass(frozen=True)
class LMProfile:
    """Estimated energy per token of a language model in one regime. Never a measurement.

    ``energy_j``/``seconds`` are per token of ``regime.basis``; ``seconds`` is device time per
    token (the inverse of throughput), 0 under profiles without rates. ``layers`` split one
    token's cost by module and sum to it.
    """

    model: str
    hardware: str
    hardware_source: str
    dtype: str
    regime: Regime
    energy_j: float
    seconds: float
    layers: tuple[LayerSplit, ...]
    passes: tuple[LMPass, ...]
    moe: dict[str, Any] | None = None
    serving: Serving = field(default_factory=Serving)
    calibration: str = "uncalibrated"  # or what the profile was fitted to
    busy_share: float = 0.0  # of static_j, the share drawn above idle while kernels run
    runtime: str = RUNTIMES[GRAPHS]
    uncosted_ops: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    estimated: bool = True

    def total(self, name: str) -> float:
        """A per-token sum over layers (``"flops"``, ``"kv_bytes"``, ``"compute_j"``...)."""
        return sum(getattr(layer, name) for layer in self.layers)

    def power_split(self) -> dict[str, float]:
        """Per token: static energy as the idle board over the wall time, and busy power (the
        profile's ``active_w``) over the kernels' time, beside FLOP and byte energy."""
        step = sum(layer.static_j for layer in self.layers if layer.type == "Runtime")
        kernels = self.total("static_j") - step  # the host's time between steps is idle
        return {
            "idle_j": kernels * (1 - self.busy_share) + step,
            "busy_j": kernels * self.busy_share,
            "compute_j": self.total("compute_j"),
            "memory_j": self.total("memory_j"),
        }

    def to_dict(self) -> dict[str, Any]:
        sums = SUMMED
        return {
            "model": self.model,
            "hardware": self.hardware,
            "hardware_source": self.hardware_source,
            "dtype": self.dtype,
            "estimated": self.estimated,
            "regime": self.regime.to_dict(),
            "per_token": {
                "energy_j": self.energy_j,
                "seconds": self.seconds,
                "basis": self.regime.basis,
                **{k: self.total(k) for k in sums},
                **self.power_split(),
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "passes": [p.to_dict() for p in self.passes],
            "moe": self.moe,
            "runtime": self.runtime,
            "calibration": self.calibration,
            "serving": {**dataclasses.asdict(self.serving), "stored": self.serving.describe()},
            "uncosted_ops": dict(self.uncosted_ops),
            "wall_s": self.wall_s,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)
