"""Energy model: a hardware profile prices a trace's ops → an *estimated* :class:`EnergyProfile`.

Per op: ``compute = MACs × pJ/MAC(dtype) + other ops × pJ/add(dtype)`` and
``memory = Σ operand bytes × pJ/byte at the operand's level + MACs × bytes/operand × Σ
accesses_per_mac[level] × pJ/byte(level)``. The level rule:

* parameters and buffers are streamed from **DRAM** on every inference;
* an activation tensor (read or written) of at most ``buffer_bytes`` stays in the on-chip
  **buffer**; a larger one spills to **DRAM**;
* operands reused inside a MAC-heavy op are delivered from inner levels (register file), charged
  per MAC via ``accesses_per_mac``.

Under ``zero_skipping: true``, MACs against zero weights are not charged (nor their inner-level
operand accesses) and zero weights are not fetched. Under ``dtype``, floating tensors are priced
as that dtype (``int8`` = a model quantised to int8); index tensors keep theirs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from energyprune.energy.hardware import HardwareProfile, load_hardware
from energyprune.energy.trace import Operand, OpRecord, Trace, trace
from energyprune.errors import ConfigError

__all__ = [
    "DTYPES",
    "EnergyProfile",
    "LayerEnergy",
    "OpEnergy",
    "Totals",
    "estimate",
    "profile",
]

PJ = 1e-12
DTYPES = ("fp32", "fp16", "bf16", "int8")
_ITEMSIZE = {
    "fp64": 8,
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "bool": 1,
}
_FLOATING = {"fp64", "fp32", "fp16", "bf16"}


@dataclass(frozen=True)
class OpEnergy:
    """One op priced under a profile (estimate)."""

    record: OpRecord
    dtype: str
    charged_macs: float
    bytes: int
    compute_j: float
    memory_j: float

    @property
    def energy_j(self) -> float:
        return self.compute_j + self.memory_j


@dataclass(frozen=True)
class Totals:
    """Sums over ops: dense MACs, parameters, bytes moved and estimated joules."""

    macs: int
    params: int
    bytes: int
    energy_j: float
    compute_j: float
    memory_j: float


@dataclass(frozen=True)
class LayerEnergy(Totals):
    """Estimated energy of one module: the ops it executed itself, not its children's."""

    name: str = ""
    type: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, **asdict(self)}


@dataclass(frozen=True)
class EnergyProfile:
    """Estimated per-layer energy of one forward pass. Never a measurement: ``estimated`` is True.

    Attributes:
        model: model name. hardware: profile name. dtype: pricing dtype.
        input_shape: shape of the first tensor input.
        total: :class:`Totals`. layers: :class:`LayerEnergy` records in execution order.
        ops: every priced op (for pruning arithmetic). uncosted_ops: ``{op: count}`` of ops with
            no formula, whose arithmetic is missing from the totals (their bytes are counted).
        wall_s: seconds spent tracing and pricing.
    """

    model: str
    hardware: str
    dtype: str
    input_shape: tuple[int, ...]
    total: Totals
    layers: tuple[LayerEnergy, ...]
    ops: tuple[OpEnergy, ...] = field(repr=False, default=())
    uncosted_ops: dict[str, int] = field(default_factory=dict)
    hardware_source: str = ""
    wall_s: float = 0.0
    estimated: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``--json`` schema)."""
        return {
            "model": self.model,
            "hardware": self.hardware,
            "hardware_source": self.hardware_source,
            "dtype": self.dtype,
            "input_shape": list(self.input_shape),
            "estimated": self.estimated,
            "total": asdict(self.total),
            "layers": [layer.to_dict() for layer in self.layers],
            "uncosted_ops": dict(self.uncosted_ops),
            "wall_s": self.wall_s,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The profile as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str | os.PathLike[str], top: int = 30) -> None:
        """Write a PNG bar chart of compute vs memory energy of the ``top`` costliest layers."""
        from energyprune.pipeline.report import plot_layer_energy

        plot_layer_energy(self, path, top=top)


def _price_dtype(traced: str, override: str | None) -> str:
    return override if override is not None and traced in _FLOATING else traced


def _level(operand: Operand, nbytes: float, hw: HardwareProfile) -> str:
    if operand.role == "param" or nbytes > hw.buffer_bytes:
        return "dram"
    return "buffer"


def _price(record: OpRecord, hw: HardwareProfile, override: str | None) -> OpEnergy:
    floating = [o.dtype for o in record.operands if o.dtype in _FLOATING]
    traced = floating[0] if floating else (record.operands[0].dtype if record.operands else "fp32")
    dtype = _price_dtype(traced, override)
    costs = hw.compute_costs(dtype)
    macs = record.macs * (record.mac_density if hw.zero_skipping else 1.0)
    compute_pj = macs * costs["mac"] + record.ops * costs["add"]
    memory_pj = 0.0
    total_bytes = 0.0
    for operand in record.operands:
        nbytes = operand.numel * _ITEMSIZE.get(_price_dtype(operand.dtype, override), 4)
        if operand.role == "param" and hw.zero_skipping:
            nbytes *= operand.density
        total_bytes += nbytes
        memory_pj += nbytes * hw.level_cost(_level(operand, nbytes, hw))
    if macs:
        per_mac = sum(n * hw.level_cost(level) for level, n in hw.accesses_per_mac.items())
        memory_pj += macs * _ITEMSIZE[dtype] * per_mac
    return OpEnergy(record, dtype, macs, round(total_bytes), compute_pj * PJ, memory_pj * PJ)


def _layers(tr: Trace, ops: Iterable[OpEnergy]) -> tuple[LayerEnergy, ...]:
    acc: dict[str, list[float]] = {}
    for op in ops:
        row = acc.setdefault(op.record.module, [0, 0, 0.0, 0.0])
        row[0] += op.record.macs
        row[1] += op.bytes
        row[2] += op.compute_j
        row[3] += op.memory_j
    for name, info in tr.modules.items():  # parameter owners that ran no op of their own
        if info.params and name not in acc:
            acc[name] = [0, 0, 0.0, 0.0]
    return tuple(
        LayerEnergy(
            name=name or "(root)",
            type=tr.modules[name].type if name in tr.modules else "?",
            macs=int(macs),
            params=tr.modules[name].params if name in tr.modules else 0,
            bytes=int(nbytes),
            energy_j=compute + memory,
            compute_j=compute,
            memory_j=memory,
        )
        for name, (macs, nbytes, compute, memory) in acc.items()
    )


def estimate(
    tr: Trace,
    hardware: str | os.PathLike[str] | HardwareProfile = "horowitz-45nm",
    dtype: str | None = None,
    model_name: str = "model",
) -> EnergyProfile:
    """Price a :class:`Trace` under a hardware profile (no re-tracing)."""
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)} or None, got {dtype!r}")
    hw = load_hardware(hardware)
    start = time.perf_counter()
    ops = tuple(_price(r, hw, dtype) for r in tr.records)
    layers = _layers(tr, ops)
    compute = sum(op.compute_j for op in ops)
    memory = sum(op.memory_j for op in ops)
    total = Totals(
        macs=sum(op.record.macs for op in ops),
        params=tr.params,
        bytes=sum(op.bytes for op in ops),
        energy_j=compute + memory,
        compute_j=compute,
        memory_j=memory,
    )
    priced = dtype or next((op.dtype for op in ops if op.record.macs), "fp32")
    return EnergyProfile(
        model=model_name,
        hardware=hw.name,
        dtype=priced,
        input_shape=tr.input_shapes[0] if tr.input_shapes else (),
        total=total,
        layers=layers,
        ops=ops,
        uncosted_ops=dict(tr.uncosted_ops),
        hardware_source=hw.path,
        wall_s=tr.wall_s + time.perf_counter() - start,
    )


def profile(
    model: nn.Module,
    example_inputs: Any,
    hardware: str | os.PathLike[str] | HardwareProfile = "horowitz-45nm",
    dtype: str | None = None,
    *,
    name: str | None = None,
) -> EnergyProfile:
    """Estimate per-layer inference energy of ``model`` on ``example_inputs``.

    Args:
        model: any ``nn.Module`` (run once, in eval mode, under the caller's grad mode).
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        hardware: built-in profile name (``horowitz-45nm``, ``eyeriss-65nm``, ``gpu-generic``),
            a YAML path, or a :class:`HardwareProfile`.
        dtype: price floating tensors as ``fp32``/``fp16``/``bf16``/``int8``; None = as traced.
        name: model name recorded in the profile (default: the class name).

    Returns:
        An :class:`EnergyProfile` (an estimate, labelled as such).
    """
    hw = load_hardware(hardware)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)} or None, got {dtype!r}")
    tr = trace(model, example_inputs)
    return estimate(tr, hw, dtype, model_name=name or type(model).__name__)
