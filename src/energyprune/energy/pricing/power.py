"""The power an estimate implies: joules over seconds, kernel by kernel.

A timed profile prices energy and time, so it implies a power draw. A board cannot draw more
than its maximum (its TDP, a module's rated power), so a profile that implies more on some
kernel has put energy where the device spends none; a fitted profile that does so absorbed
power into per-op costs. A kernel is a producer op (a convolution, a matrix product, ...) with
the epilogue ops a fusing runtime runs inside it (:func:`~energyprune.energy.hardware.
kernel_time.fused_ops`): an epilogue alone has the energy of its arithmetic and almost no time
of its own, and its "power" would mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from energyprune.energy.hardware.kernel_time import fused_ops
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.estimates import EnergyProfile

__all__ = ["PowerDraw", "implied_power"]


@dataclass(frozen=True)
class PowerDraw:
    """Implied power of one priced forward: on average, and on its hungriest kernel."""

    model: str
    hardware: str
    mean_w: float
    peak_w: float
    peak_kernel: str  # the module and op of the hungriest kernel
    max_w: float | None  # the profile's declared maximum, if any

    @property
    def excess_w(self) -> float:
        """Watts above the declared maximum (0 when within it or none is declared)."""
        return 0.0 if self.max_w is None else max(0.0, self.peak_w - self.max_w)

    def line(self) -> str:
        """One line: the peak kernel against the maximum."""
        limit = "no declared maximum" if self.max_w is None else f"maximum {self.max_w:.4g} W"
        return (
            f"{self.model} on {self.hardware}: {self.mean_w:.4g} W on average, "
            f"{self.peak_w:.4g} W on {self.peak_kernel} ({limit})"
        )


def implied_power(priced: EnergyProfile, hw: HardwareProfile) -> PowerDraw | None:
    """Joules over seconds of ``priced`` (priced under ``hw``) per kernel and on average;
    None when the profile prices no time."""
    if not hw.timed or priced.total.seconds <= 0:
        return None
    fused = fused_ops([op.record for op in priced.ops], hw.runtime)
    kernels: list[list[float]] = []  # [joules, seconds, index of the producer op]
    for i, op in enumerate(priced.ops):
        if i in fused and kernels:
            kernels[-1][0] += op.energy_j
            kernels[-1][1] += op.seconds
        elif op.seconds > 0:
            kernels.append([op.energy_j, op.seconds, i])
    joules, seconds, index = max(kernels, key=lambda k: k[0] / k[1])
    record = priced.ops[int(index)].record
    where = f"{record.module or 'the model'} ({record.op})"
    maximum = hw.power.max_w if hw.power is not None else None
    mean = priced.total.energy_j / priced.total.seconds
    return PowerDraw(priced.model, hw.name, mean, joules / seconds, where, maximum)
