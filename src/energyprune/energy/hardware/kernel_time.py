"""How a runtime runs kernels: what a plain roofline misses on a small GPU (a Jetson TX2).

Four terms, each off by default, so a profile without a ``runtime:`` section prices as before:

- **Epilogue fusion** (``fuse_epilogues``). TensorRT and cuDNN fold a conv's or linear's batch
  norm into its weights and run the activation and the residual add in the same kernel. A
  fused op launches nothing and moves no bytes of its own; only a residual's second input is
  read. Its arithmetic stays.
- **Occupancy** (``occupancy_outputs``, N0). A GPU reaches its peak only with enough work in
  flight to hide latency. An op that writes O elements runs its arithmetic at a share
  O / (O + N0) of the peak, which is why a 4×4 map with many channels is slow per FLOP.
- **Per-kernel efficiency** (``efficiency``: ``depthwise``, ``grouped``). Depthwise and grouped
  convs run other kernels than dense ones, at their own share of the peak. A grouped conv also
  pays ``grouped_weight_flops`` FLOP-equivalents per weight per sample: its kernel walks each
  group's weights once per map, whatever the map's size.
- **Per-kind launch time** (``launch_s``: op kind → seconds). For example, a layout copy (a
  channel shuffle) is a TensorRT shuffle layer, far dearer than a conv's launch.
- **Graph kernel floor and step time** (``graph_kernel_s``, ``graph_step_s``): the shortest a
  fused kernel runs when a serving stack replays CUDA graphs, and the host's time between two
  replays (language models' ``graphs`` runtime, :mod:`energyprune.energy.lm.graphs`).

:func:`op_timing` reads what these terms need from a traced op, and :func:`fused_ops` finds the
epilogues. Both pricing (:mod:`energyprune.energy.pricing.estimates`) and calibration use them, so
a fitted profile prices what it was fitted on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from energyprune.errors import ConfigError

if TYPE_CHECKING:  # records only: no torch import when a profile is loaded
    from energyprune.energy.tracing.tracer import OpRecord

__all__ = [
    "CONV_VARIANTS",
    "KernelTiming",
    "OpTiming",
    "PricedOp",
    "fused_ops",
    "op_timing",
    "parse_runtime",
]

#: The conv kernels a runtime may run at their own efficiency.
CONV_VARIANTS = ("depthwise", "grouped")
#: The ops fused into a preceding conv or linear (batch norm, activations, a residual add).
_EPILOGUE = frozenset(
    f"aten.{name}"
    for op in ("relu", "hardtanh", "clamp", "silu", "hardswish", "leaky_relu", "sigmoid", "add")
    for name in (f"{op}.default", f"{op}_.default", f"{op}.Tensor", f"{op}_.Tensor")
) | frozenset(
    {
        "aten.gelu.default",
        "aten.native_batch_norm.default",
        "aten._native_batch_norm_legit_no_training.default",
    }
)
_PRODUCERS = ("conv", "matmul")


@dataclass(frozen=True)
class KernelTiming:
    """A runtime's timing terms (see the module docstring); the defaults price nothing extra."""

    fuse_epilogues: bool = False
    occupancy_outputs: float = 0.0
    efficiency: dict[str, float] = field(default_factory=dict)
    grouped_weight_flops: float = 0.0
    launch_s: dict[str, float] = field(default_factory=dict)
    graph_kernel_s: float = 0.0  # the shortest a fused kernel of a CUDA graph runs
    graph_step_s: float = 0.0  # host time between two graph replays (scheduling, sampling)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fuse_epilogues": self.fuse_epilogues,
            "occupancy_outputs": self.occupancy_outputs,
            "efficiency": dict(self.efficiency),
            "grouped_weight_flops": self.grouped_weight_flops,
            "launch_s": dict(self.launch_s),
            "graph_kernel_s": self.graph_kernel_s,
            "graph_step_s": self.graph_step_s,
        }


@dataclass(frozen=True)
class OpTiming:
    """What the timing terms read from one op: its kind, conv variant, output elements,
    weights (parameter elements) and batch."""

    kind: str
    variant: str = "dense"
    outputs: int = 0
    weights: int = 0
    batch: int = 1
    fused: bool = False


@dataclass(frozen=True)
class PricedOp:
    """One op of a forward pass as a fit sees it: its energy-feature amounts and timing."""

    amounts: Counter[str]
    timing: OpTiming


def _variant(record: OpRecord) -> str:
    if record.kind != "conv" or record.groups <= 1:
        return "dense"
    return "depthwise" if len(record.channels) == 1 else "grouped"


def op_timing(record: OpRecord, fused: bool = False) -> OpTiming:
    """The :class:`OpTiming` of a traced op (``fused``: it runs in a producer's epilogue)."""
    out = record.output_shapes[0] if record.output_shapes else ()
    weights = sum(o.numel for o in record.operands if o.role == "param")
    return OpTiming(
        record.kind,
        _variant(record),
        math.prod(out) if out else 0,
        weights,
        int(out[0]) if out else 1,
        fused,
    )


def fused_ops(records: Sequence[OpRecord], timing: KernelTiming) -> frozenset[int]:
    """Indices of the records a fusing runtime runs in a conv's or linear's epilogue: the
    batch norms, activations and adds that directly follow one, on its output's shape (ops
    that touch no tensor, such as an allocation, do not break the chain)."""
    if not timing.fuse_epilogues:
        return frozenset()
    fused, shape = set(), None
    for i, record in enumerate(records):
        if not record.operands:
            continue
        if record.kind in _PRODUCERS:
            shape = record.output_shapes[0] if record.output_shapes else None
        elif shape is not None and record.op in _EPILOGUE and record.input_shapes[:1] == (shape,):
            fused.add(i)
        else:
            shape = None
    return frozenset(fused)


def _number(value: Any, what: str, origin: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"hardware profile {origin}: runtime.{what} must be a number >= 0")
    return float(value)


def parse_runtime(data: Any, origin: str) -> KernelTiming:
    """A profile's ``runtime:`` mapping as :class:`KernelTiming` (absent: all terms off)."""
    if data is None:
        return KernelTiming()
    if not isinstance(data, dict):
        raise ConfigError(f"hardware profile {origin}: runtime must be a mapping of fields")
    unknown = set(data) - set(KernelTiming().to_dict())
    if unknown:
        raise ConfigError(
            f"hardware profile {origin}: runtime has no field {sorted(unknown)[0]}; "
            f"it takes {', '.join(KernelTiming().to_dict())}"
        )
    efficiency = data.get("efficiency") or {}
    launch = data.get("launch_s") or {}
    if not isinstance(efficiency, dict) or not isinstance(launch, dict):
        raise ConfigError(
            f"hardware profile {origin}: runtime.efficiency and runtime.launch_s must be mappings"
        )
    bad = [k for k in efficiency if k not in CONV_VARIANTS]
    if bad:
        raise ConfigError(
            f"hardware profile {origin}: runtime.efficiency names {bad[0]}; it "
            f"takes {', '.join(CONV_VARIANTS)}"
        )
    eff = {str(k): _number(v, f"efficiency.{k}", origin) for k, v in efficiency.items()}
    if any(v <= 0 for v in eff.values()):
        raise ConfigError(f"hardware profile {origin}: runtime.efficiency values must be > 0")
    scalars = {
        k: _number(data.get(k, 0.0), k, origin)
        for k in ("occupancy_outputs", "grouped_weight_flops", "graph_kernel_s", "graph_step_s")
    }
    return KernelTiming(
        fuse_epilogues=bool(data.get("fuse_epilogues", False)),
        efficiency=eff,
        launch_s={str(k): _number(v, f"launch_s.{k}", origin) for k, v in launch.items()},
        **scalars,
    )
