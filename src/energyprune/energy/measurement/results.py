"""What a measurement produces: metered windows and the result of one configuration.

Kept apart from the protocol that makes them (protocol.py) so readers of results (reports,
calibration tables) need not see how they were made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from energyprune.energy.quantity import Measured

__all__ = ["Measurement", "Window"]


@dataclass(frozen=True)
class Window:
    """One metered window: joules over seconds for ``iterations`` forward passes."""

    joules: float
    seconds: float
    iterations: int
    samples: int

    @property
    def joules_per_sample(self) -> float:
        return self.joules / self.samples

    @property
    def power_w(self) -> float:
        return self.joules / self.seconds


@dataclass(frozen=True)
class Measurement:
    """Energy and latency of one configuration. ``measured`` says whether a meter was read.

    When ``measured`` is False, every joule field is None and ``estimate`` holds the energy
    model's figure, labelled with its hardware profile; latency is always measured.
    """

    measured: bool
    backend: str
    device: str
    batch_size: int
    dtype: str
    joules_per_sample: dict[str, float] | None
    active_joules_per_sample: float | None
    latency_ms: dict[str, float]
    throughput_sps: float
    power_w: float | None
    idle_power_w: float | None
    windows: tuple[Window, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    unavailable_reason: str | None = None
    estimate: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None  # Noise.to_dict(): spread, other load, noisy, reason

    @property
    def noisy(self) -> str | None:
        """Why this reading cannot be trusted (energy/measurement/noise.py), or None."""
        return (self.noise or {}).get("reason")

    @property
    def energy(self) -> Measured | None:
        """Gross joules per sample as a typed measurement (median over windows, IQR spread);
        None when no meter was read."""
        if not self.measured or self.joules_per_sample is None:
            return None
        jps = self.joules_per_sample
        return Measured(jps["median"], self.backend, len(self.windows), jps["iqr"], "gross")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["windows"] = [
            {**asdict(w), "joules_per_sample": w.joules_per_sample, "power_w": w.power_w}
            for w in self.windows
        ]
        return data
