"""What every fit consumes and returns: one measured configuration, traced, and the fitted
profile with its report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from energyprune.energy.hardware.profile import HardwareProfile

__all__ = ["CalibrationResult", "Observation"]


@dataclass(frozen=True)
class CalibrationResult:
    """The fitted profile and its fidelity on held-out rows."""

    profile: HardwareProfile
    report: dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """One measured configuration, traced: what every fit (live or from a file) consumes.

    ``features`` and ``macs`` are per sample; ``joules`` is the measured J/sample; ``group``
    names what it may be compared with (same device, batch size and dtype); ``family`` is what
    it is held out with (a model, a block family; default its name), so the held-out rows are
    configurations the fit saw in no form.
    """

    name: str
    group: str
    features: Counter[str]
    macs: float
    joules: float
    batch_size: int
    dtype: str
    family: str = ""

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)
