"""Energy features of an op: the quantities a hardware profile prices, one pJ coefficient each.

Pricing (:mod:`energyprune.energy.pricing.estimates`) and calibration
(:mod:`energyprune.energy.calibration.live`) share this one definition, so a fitted profile prices
exactly what it was fitted on.

Features: ``mac:<dtype>`` (charged MACs), ``add:<dtype>`` (other arithmetic), ``mac:unaligned``
(MACs of ops whose widths miss the profile's ``channel_multiple``), ``bytes:<level>`` (bytes at
each memory level, including per-MAC inner-level operand accesses) and ``launch`` (kernels run).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from energyprune.energy.hardware.kernel_time import PricedOp, fused_ops, op_timing
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.tracing.tracer import Operand, OpRecord, trace
from energyprune.errors import ConfigError

__all__ = [
    "FLOATING",
    "ITEMSIZE",
    "OpFeatures",
    "itemsize",
    "op_amounts",
    "op_features",
    "price_dtype",
    "split_energy",
    "variant_features",
]

ITEMSIZE = {
    "fp64": 8,
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "bool": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
FLOATING = frozenset({"fp64", "fp32", "fp16", "bf16"})
COMPUTE_PREFIXES = ("mac:", "add:")


def itemsize(dtype: str) -> int:
    """Bytes per element of a traced dtype; a dtype we cannot size is refused, never guessed."""
    try:
        return ITEMSIZE[dtype]
    except KeyError:
        raise ConfigError(
            f"cannot price tensors of dtype {dtype}: energyprune sizes "
            f"{', '.join(ITEMSIZE)}; cast the model to one of them (e.g. --dtype fp16)"
        ) from None


def price_dtype(traced: str, override: str | None) -> str:
    """The dtype a tensor is priced as: the override for floating tensors, else its own."""
    return override if override is not None and traced in FLOATING else traced


def _level(operand: Operand, nbytes: float, hw: HardwareProfile) -> str:
    if operand.role == "param" or nbytes > hw.buffer_bytes:
        return "dram"
    return "buffer"


@dataclass
class OpFeatures:
    """Feature name → amount for one op, plus what tables show beside energy."""

    dtype: str
    amounts: Counter[str] = field(default_factory=Counter)
    macs_charged: float = 0.0
    bytes_moved: float = 0.0


def _kept(record: OpRecord, fused: bool) -> list[Operand]:
    """The operands an op moves: all of them, or for an op fused into its producer's epilogue
    only the inputs after the first (a residual's second input; the first is in registers,
    batch-norm parameters are folded into the weights, and the producer writes the output)."""
    if not fused:
        return list(record.operands)
    inputs = [o for o in record.operands if o.role == "input"]
    return inputs[1:]


def op_features(
    record: OpRecord, hw: HardwareProfile, override: str | None, fused: bool = False
) -> OpFeatures:
    """Energy features of one op under ``hw``, pricing floating tensors as ``override``
    (``fused``: it runs in a conv's or linear's epilogue, see energy/hardware/kernel_time.py)."""
    floating = [o.dtype for o in record.operands if o.dtype in FLOATING]
    traced = floating[0] if floating else (record.operands[0].dtype if record.operands else "fp32")
    dtype = price_dtype(traced, override)
    size = itemsize(dtype)  # refused here, before a profile is asked for a row it cannot have
    macs = record.macs * (record.mac_density if hw.zero_skipping else 1.0)
    feats = OpFeatures(dtype, macs_charged=macs)
    amounts = feats.amounts
    row = hw.compute_row(dtype) if macs or record.ops else ""
    if macs:
        amounts[f"mac:{row}"] += macs
        multiple = hw.channel_multiple
        if multiple > 1 and any(c % multiple for c in record.channels):
            amounts["mac:unaligned"] += macs
        for level, accesses in hw.accesses_per_mac.items():
            amounts[f"bytes:{level}"] += macs * size * accesses
    if record.ops:
        amounts[f"add:{row}"] += record.ops
    moved = 0.0
    for operand in _kept(record, fused):
        nbytes = operand.numel * itemsize(price_dtype(operand.dtype, override))
        if operand.role == "param" and hw.zero_skipping:
            nbytes *= operand.density
        moved += nbytes
        amounts[f"bytes:{_level(operand, nbytes, hw)}"] += nbytes
    feats.bytes_moved = moved
    if record.kind != "view" and record.operands and not fused:
        amounts["launch"] += 1
    return feats


def split_energy(amounts: Counter[str], coef: dict[str, float]) -> tuple[float, float, float]:
    """(compute, memory, overhead) in pJ of feature ``amounts`` under coefficients ``coef``."""
    compute = memory = overhead = 0.0
    for name, amount in amounts.items():
        pj = amount * coef[name]
        if name.startswith(COMPUTE_PREFIXES):
            compute += pj
        elif name.startswith("bytes:"):
            memory += pj
        else:
            overhead += pj
    return compute, memory, overhead


def op_amounts(
    model: nn.Module, example: torch.Tensor, hw: HardwareProfile
) -> tuple[tuple[PricedOp, ...], int]:
    """Each op's energy features and timing over one forward pass (priced as traced, epilogues
    fused where ``hw``'s runtime fuses them), and dense MACs per sample."""
    with torch.no_grad():
        tr = trace(model, example)
    fused = fused_ops(tr.records, hw.runtime)
    ops = tuple(
        PricedOp(op_features(r, hw, None, i in fused).amounts, op_timing(r, i in fused))
        for i, r in enumerate(tr.records)
    )
    return ops, sum(r.macs for r in tr.records) // example.shape[0]


def variant_features(
    model: nn.Module, example: torch.Tensor, hw: HardwareProfile
) -> tuple[Counter[str], int]:
    """Per-sample energy features and dense MACs of one forward pass, priced as traced."""
    ops, macs = op_amounts(model, example, hw)
    total: Counter[str] = sum((op.amounts for op in ops), Counter())
    return Counter({k: v / example.shape[0] for k, v in total.items()}), macs
