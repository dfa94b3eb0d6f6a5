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
and no static energy, so it prices exactly as before. A profile's ``runtime`` terms (fusion,
occupancy, per-kernel efficiency and launch time: :mod:`energyprune.energy.hardware.kernel_time`)
slow the compute side and set the launch time per op kind.
"""

from __future__ import annotations

from collections import Counter

from energyprune.energy.hardware.kernel_time import OpTiming
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.errors import ConfigError

__all__ = ["kernel_compute", "op_rates", "op_seconds"]


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


def kernel_compute(
    compute: float, amounts: Counter[str], hw: HardwareProfile, timing: OpTiming
) -> float:
    """Compute seconds at the peak, slowed by the runtime's kernel terms (occupancy, the
    conv variant's efficiency, a grouped conv's per-weight pass)."""
    runtime = hw.runtime
    if timing.variant != "dense":
        compute /= runtime.efficiency.get(timing.variant, 1.0)
    macs = sum(v for k, v in amounts.items() if k.startswith("mac:") and k != "mac:unaligned")
    if timing.variant == "grouped" and runtime.grouped_weight_flops and macs:
        compute *= 1 + runtime.grouped_weight_flops * timing.weights * timing.batch / macs
    if runtime.occupancy_outputs and timing.outputs:
        compute *= (timing.outputs + runtime.occupancy_outputs) / timing.outputs
    return compute


def op_seconds(amounts: Counter[str], hw: HardwareProfile, timing: OpTiming | None = None) -> float:
    """Roofline seconds of one op's feature ``amounts`` (0 when ``hw`` gives no rates);
    ``timing`` (the op's :class:`OpTiming`) applies the profile's runtime terms."""
    if not hw.timed:
        return 0.0
    compute, memory = op_rates(amounts, hw)
    launch = hw.launch_s
    if timing is not None:
        compute = kernel_compute(compute, amounts, hw, timing)
        launch = hw.runtime.launch_s.get(timing.kind, launch)
    return max(compute, memory) + launch * amounts.get("launch", 0)
