"""One token's estimated cost split by module: the rows of an LM profile."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.estimates import OpEnergy
from energyprune.energy.pricing.features import itemsize, price_dtype

__all__ = ["SUMMED", "LayerSplit", "split"]

_ROLE_FIELD = {"param": "weight_bytes", "kv": "kv_bytes"}  # anything else: activations
#: the per-token sums that N tensor-parallel GPUs each pay (time is not summed: they run at once)
SUMMED = (
    "flops",
    "weight_bytes",
    "kv_bytes",
    "activation_bytes",
    "compute_j",
    "memory_j",
    "static_j",
    "overhead_j",
)


@dataclass(frozen=True)
class LayerSplit:
    """One module's share of a token's estimated cost (FLOPs = 2 per MAC)."""

    name: str
    type: str
    flops: float = 0.0
    weight_bytes: float = 0.0
    kv_bytes: float = 0.0
    activation_bytes: float = 0.0
    compute_j: float = 0.0
    memory_j: float = 0.0
    static_j: float = 0.0
    overhead_j: float = 0.0
    seconds: float = 0.0

    @property
    def energy_j(self) -> float:
        return self.compute_j + self.memory_j + self.static_j + self.overhead_j

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "energy_j": self.energy_j}


def split(weighted: Iterable[tuple[OpEnergy, float]], hw: HardwareProfile, dtype, types):
    rows: dict[str, dict[str, float]] = {}
    for op, weight in weighted:
        row = rows.setdefault(op.record.module or "(root)", {})
        row["flops"] = row.get("flops", 0.0) + 2 * op.record.macs * weight
        for o in op.record.operands:
            key = _ROLE_FIELD.get(o.role, "activation_bytes")
            nbytes = o.numel * itemsize(price_dtype(o.dtype, dtype))
            if o.role == "param" and hw.zero_skipping:
                nbytes *= o.density
            row[key] = row.get(key, 0.0) + nbytes * weight
        for key in ("compute_j", "memory_j", "static_j", "overhead_j", "seconds"):
            row[key] = row.get(key, 0.0) + getattr(op, key) * weight
    return tuple(LayerSplit(name, types.get(name, "?"), **row) for name, row in rows.items())
