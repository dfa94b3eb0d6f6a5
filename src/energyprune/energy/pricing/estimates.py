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
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from energyprune.energy.hardware.kernel_time import fused_ops, op_timing
from energyprune.energy.hardware.profile import DTYPES, HardwareProfile, load_hardware
from energyprune.energy.pricing.features import op_features, split_energy
from energyprune.energy.pricing.roofline import op_seconds
from energyprune.energy.quantity import Estimated
from energyprune.energy.tracing.tracer import OpRecord, Trace, trace
from energyprune.errors import ConfigError
from energyprune.models.layers import folded_copy

__all__ = [
    "DTYPES",
    "EnergyProfile",
    "LayerEnergy",
    "OpEnergy",
    "Totals",
    "estimate",
    "layer_totals",
    "price_op",
    "profile",
    "with_forward",
]

PJ = 1e-12


@dataclass(frozen=True)
class OpEnergy:
    """One op priced under a profile (estimate)."""

    record: OpRecord
    dtype: str
    charged_macs: float
    bytes: int
    compute_j: float
    memory_j: float
    overhead_j: float = 0.0
    seconds: float = 0.0  # roofline time (0 under profiles without rates)
    static_j: float = 0.0  # static (+ active) power over that time

    @property
    def energy_j(self) -> float:
        return self.compute_j + self.memory_j + self.overhead_j + self.static_j


@dataclass(frozen=True)
class Totals:
    """Sums over ops: dense MACs, parameters, bytes moved and estimated joules.

    ``energy_j = compute_j + memory_j + overhead_j + static_j``; overhead (per-kernel launch
    energy) is zero except under calibrated profiles; ``seconds`` (roofline time) and
    ``static_j`` (static power over it) are zero under profiles without rates.
    """

    macs: int
    params: int
    bytes: int
    energy_j: float
    compute_j: float
    memory_j: float
    overhead_j: float = 0.0
    seconds: float = 0.0
    static_j: float = 0.0

    @classmethod
    def of(cls, ops: Iterable[OpEnergy], params: int) -> Totals:
        """Sum priced ops (dense MACs, bytes and energies)."""
        macs = nbytes = 0
        compute = memory = overhead = seconds = static = 0.0
        for op in ops:
            macs += op.record.macs
            nbytes += op.bytes
            compute += op.compute_j
            memory += op.memory_j
            overhead += op.overhead_j
            seconds += op.seconds
            static += op.static_j
        energy = compute + memory + overhead + static
        return cls(macs, params, nbytes, energy, compute, memory, overhead, seconds, static)

    def to_dict(self) -> dict[str, Any]:
        """JSON fields; ``seconds`` and ``static_j`` only where a profile priced time."""
        data = asdict(self)
        if not self.seconds:
            del data["seconds"], data["static_j"]
        return data


@dataclass(frozen=True)
class LayerEnergy(Totals):
    """Estimated energy of one module: the ops it executed itself, not its children's."""

    name: str = ""
    type: str = ""
    dtype: str = ""  # the dtype its costliest op was priced as

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "dtype": self.dtype, **super().to_dict()}


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

    @property
    def energy(self) -> Estimated:
        """The total as a typed estimate (profile and calibration source attached)."""
        return Estimated(self.total.energy_j, self.hardware, self.hardware_source or "built-in")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``--json`` schema)."""
        return {
            "model": self.model,
            "hardware": self.hardware,
            "hardware_source": self.hardware_source,
            "dtype": self.dtype,
            "input_shape": list(self.input_shape),
            "estimated": self.estimated,
            "total": self.total.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "uncosted_ops": dict(self.uncosted_ops),
            "wall_s": self.wall_s,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The profile as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)


def price_op(
    record: OpRecord,
    hw: HardwareProfile,
    coef: dict[str, float],
    override: str | None,
    fused: bool = False,
) -> OpEnergy:
    """One traced op priced under ``hw`` (``coef``: its coefficients; ``override``: dtype;
    ``fused``: it runs in its producer's epilogue, see energy/hardware/kernel_time.py)."""
    feats = op_features(record, hw, override, fused)
    compute, memory, overhead = split_energy(feats.amounts, coef)
    seconds = op_seconds(feats.amounts, hw, op_timing(record, fused))
    return OpEnergy(
        record,
        feats.dtype,
        feats.macs_charged,
        round(feats.bytes_moved),
        compute * PJ,
        memory * PJ,
        overhead * PJ,
        seconds,
        (hw.static_w + hw.active_w) * seconds,
    )


def layer_totals(tr: Trace, ops: Iterable[OpEnergy]) -> tuple[LayerEnergy, ...]:
    """Priced ops summed per module (parameter owners that ran nothing included)."""
    by_module: dict[str, list[OpEnergy]] = {}
    for op in ops:
        by_module.setdefault(op.record.module, []).append(op)
    for name, info in tr.modules.items():  # parameter owners that ran no op of their own
        if info.params:
            by_module.setdefault(name, [])
    layers = []
    for name, own in by_module.items():
        info = tr.modules.get(name)
        totals = Totals.of(own, info.params if info else 0)
        dtype = max(own, key=lambda op: op.energy_j).dtype if own else ""
        layers.append(
            LayerEnergy(
                **asdict(totals),
                name=name or "(root)",
                type=info.type if info else "?",
                dtype=dtype,
            )
        )
    return tuple(layers)


def with_forward(total: Totals, hw: HardwareProfile) -> Totals:
    """``total`` plus the profile's fixed time per forward pass at static power (no layer
    owns it: it is the runtime's, whatever the model runs)."""
    if not hw.forward_s:
        return total
    static = hw.static_w * hw.forward_s
    return replace(
        total,
        seconds=total.seconds + hw.forward_s,
        static_j=total.static_j + static,
        energy_j=total.energy_j + static,
    )


def estimate(
    tr: Trace,
    hardware: str | os.PathLike[str] | HardwareProfile = "horowitz-45nm",
    dtype: str | None = None,
    model_name: str = "model",
    *,
    layer_dtypes: Mapping[str, str] | None = None,
) -> EnergyProfile:
    """Price a :class:`Trace` under a hardware profile (no re-tracing).

    ``layer_dtypes`` maps module names to the dtype their ops are priced as (a mixed-precision
    plan, e.g. int8 everywhere but the first conv); other modules use ``dtype``.
    """
    layer_dtypes = dict(layer_dtypes or {})
    for d in [dtype, *layer_dtypes.values()]:
        if d is not None and d not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)} or None, got {d!r}")
    hw = load_hardware(hardware)
    start = time.perf_counter()
    coef = hw.coefficients()
    fused = fused_ops(tr.records, hw.runtime)
    ops = tuple(
        price_op(r, hw, coef, layer_dtypes.get(r.module, dtype), i in fused)
        for i, r in enumerate(tr.records)
    )
    layers = layer_totals(tr, ops)
    total = with_forward(Totals.of(ops, tr.params), hw)
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
    layer_dtypes: Mapping[str, str] | None = None,
    shapes_only: bool = False,
) -> EnergyProfile:
    """Estimate per-layer inference energy of ``model`` on ``example_inputs``: the one pricing
    path, so a model gets one estimate whoever asks.

    The model is priced as deployed: ``torch.nn.utils.prune`` masks folded into the weights (a
    copy is traced; an eager masked forward would also pay for ``weight_orig * mask``), and
    traced under ``torch.no_grad()`` (inference kernels; a grad-mode trace of EfficientNet-B0
    prices 20 % higher because batch norm saves its statistics for backward).

    Args:
        model: any ``nn.Module`` (run once, in eval mode; left unchanged).
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        hardware: built-in profile name (``horowitz-45nm``, ``eyeriss-65nm``, ``gpu-generic``),
            a YAML path, or a :class:`HardwareProfile`.
        dtype: price floating tensors as ``fp32``/``fp16``/``bf16``/``int8``; None = as traced.
        name: model name recorded in the profile (default: the class name).
        layer_dtypes: per-module dtype overrides (mixed precision), module name → dtype.
        shapes_only: trace on fake tensors (no arithmetic; see :func:`energyprune.trace`).

    Returns:
        An :class:`EnergyProfile` (an estimate, labelled as such).
    """
    hw = load_hardware(hardware)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)} or None, got {dtype!r}")
    if any(hasattr(m, "weight_orig") for m in model.modules()):
        model = folded_copy(model)
    with torch.no_grad():
        tr = trace(model, example_inputs, shapes_only=shapes_only)
    return estimate(
        tr, hw, dtype, model_name=name or type(model).__name__, layer_dtypes=layer_dtypes
    )
