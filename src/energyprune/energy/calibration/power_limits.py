"""A fit may not imply more power than the board can draw: linear limits on the coefficients.

Once time is fitted, every kernel's seconds are fixed, and its implied power is linear in the
energy coefficients: Σ_f c_f × amount_f / seconds + static_w + active_w. Each kernel of a few
probe networks (the zoo's, priced on the fitted time terms) gives one row of ``G c ≤ max_w``,
so a fit whose rows would pour per-op energy into a dense convolution the table never had is
held to what the device can draw on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from energyprune.energy.hardware.kernel_time import PricedOp
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.features import op_amounts
from energyprune.energy.pricing.roofline import op_seconds

__all__ = ["PROBES", "PowerLimits", "implied_peaks", "power_limits"]

#: the networks whose kernels bound a fit's power: the zoo's (dense k×k convolutions at
#: ImageNet size, depthwise blocks, a deep CIFAR VGG)
PROBES = {
    "resnet18": (1, 3, 224, 224),
    "mobilenet_v2": (1, 3, 224, 224),
    "vgg16_bn": None,
    "resnet20": None,
    "digits_cnn": None,
}


@dataclass(frozen=True)
class PowerLimits:
    """``g @ c <= h`` over the fit's columns (solve units: pJ, pJ/s)."""

    g: np.ndarray
    h: np.ndarray


_TRACED: dict[tuple, tuple[PricedOp, ...]] = {}


def _probe_ops(spec: str, hw: HardwareProfile) -> tuple[PricedOp, ...]:
    """The probe's ops as ``hw`` sees them (memory levels, alignment, fusion), traced once per
    such structure."""
    from energyprune.models.zoo import build_model

    levels = (tuple(sorted(hw.accesses_per_mac.items())), tuple(sorted(hw.memory_pj_per_byte)))
    structure = (spec, hw.buffer_bytes, hw.channel_multiple, hw.runtime.fuse_epilogues, levels)
    if structure not in _TRACED:
        built = build_model(spec)
        example = torch.zeros(PROBES[spec] or built.input_shape)
        _TRACED[structure] = op_amounts(built.model.eval(), example, hw)[0]
    return _TRACED[structure]


def _kernels(ops: Sequence[PricedOp], hw: HardwareProfile) -> list[tuple[Counter[str], float]]:
    """(feature amounts, seconds) of each kernel: a producer with its fused epilogue ops."""
    kernels: list[tuple[Counter[str], float]] = []
    for op in ops:
        seconds = op_seconds(op.amounts, hw, op.timing)
        if op.timing.fused and kernels:
            amounts, s = kernels[-1]
            kernels[-1] = (amounts + op.amounts, s + seconds)
        elif seconds > 0:
            kernels.append((Counter(op.amounts), seconds))
    return kernels


def _rows(hw: HardwareProfile, spec: str, names: Sequence[str], powers: Sequence[str]):
    """One row per kernel of probe ``spec`` priced on ``hw``'s time terms: the implied power
    per unit of each coefficient (a feature's amount per second; 1 for each power)."""
    kernels = _kernels(_probe_ops(spec, hw), hw)
    return np.array([[a.get(n, 0.0) / s for n in names] + [1.0] * len(powers) for a, s in kernels])


def power_limits(
    timed: HardwareProfile, names: Sequence[str], powers: Sequence[str]
) -> PowerLimits | None:
    """One row per probe kernel priced on ``timed`` (fitted time terms): implied power within
    the declared maximum. None when the profile declares none."""
    if timed.power is None or not timed.timed:
        return None
    g = np.vstack([_rows(timed, spec, names, powers) for spec in PROBES])
    return PowerLimits(g, np.full(len(g), timed.power.max_w * 1e12))


def implied_peaks(hw: HardwareProfile) -> dict[str, float]:
    """The hungriest kernel's implied watts on each probe network under ``hw`` (a fitted
    profile's report carries them; the fit keeps them within the declared maximum): the
    limits' rows times the profile's coefficients."""
    if not hw.timed:
        return {}
    coef = hw.coefficients()
    names, powers = sorted(coef), ("static_w", "active_w")
    c = np.array([coef[n] for n in names] + [getattr(hw, p) * 1e12 for p in powers])
    return {spec: float(np.max(_rows(hw, spec, names, powers) @ c)) * 1e-12 for spec in PROBES}
