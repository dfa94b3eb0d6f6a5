"""Time and static energy of one op: the roofline, for profiles that give rates.

A profile may give peak FLOP/s per dtype (``peak_flops``), bytes/s per memory level
(``bandwidth``), a time per kernel launch (``launch_s``) and the device's static power
(``static_w``). An op then takes

    seconds = max(FLOPs / peak_flops[dtype], Σ_level bytes_level / bandwidth[level])
              + launch_s × launches

(compute and memory overlap; a launch does not), and costs ``static_w × seconds`` of static
energy on top of its dynamic energy: the idle board draws power while the op runs. A MAC is 2
FLOPs; element-wise ops count 1 FLOP each at the same peak (an optimistic bound for vector
units). Levels without a bandwidth are not a bottleneck. A profile without rates prices no time
and no static energy, so it prices exactly as before.
"""

from __future__ import annotations

from collections import Counter

from energyprune.energy.hardware import HardwareProfile
from energyprune.errors import ConfigError

__all__ = ["op_rates", "op_seconds"]


def _flop_seconds(amounts: Counter[str], hw: HardwareProfile) -> float:
    seconds = 0.0
    for name, amount in amounts.items():
        kind, _, dtype = name.partition(":")
        if kind not in ("mac", "add") or dtype == "unaligned" or not amount:
            continue
        peak = hw.peak_flops.get(dtype)
        if peak is None:
            raise ConfigError(
                f"hardware profile '{hw.name}' times ops but has no peak_flops for {dtype}: add "
                f"peak_flops.{dtype} (FLOP/s)"
            )
        seconds += amount * (2 if kind == "mac" else 1) / peak
    return seconds


def op_rates(amounts: Counter[str], hw: HardwareProfile) -> tuple[float, float]:
    """(compute seconds, memory seconds) of one op at ``hw``'s peak rates."""
    memory = sum(
        amount / hw.bandwidth[name.removeprefix("bytes:")]
        for name, amount in amounts.items()
        if name.startswith("bytes:") and name.removeprefix("bytes:") in hw.bandwidth
    )
    return _flop_seconds(amounts, hw), memory


def op_seconds(amounts: Counter[str], hw: HardwareProfile) -> float:
    """Roofline seconds of one op's feature ``amounts`` (0 when ``hw`` gives no rates)."""
    if not hw.timed:
        return 0.0
    return max(op_rates(amounts, hw)) + hw.launch_s * amounts.get("launch", 0)
