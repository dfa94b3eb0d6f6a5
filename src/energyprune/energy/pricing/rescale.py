"""Re-price a traced model at other layer widths without tracing it again.

A pruning round proposes new widths; tracing the pruned model to price them costs a forward
pass, while scaling the traced ops' sizes and pricing them again costs a hundredth of that.
The scaling follows each module's inputs and outputs: MACs scale with both (with the outputs
alone for a depthwise conv), weights with both, biases and norm parameters with the outputs,
activations read with the inputs and written with the outputs. Ops without parameters
(activations, pooling, residual adds) follow the outputs of the last module with parameters
that ran before them. Every op is priced by the same
:func:`~energyprune.energy.pricing.estimates.price_op`, so the memory level of each resized tensor
(on-chip buffer or DRAM) is decided again: the jumps a linear per-channel estimate misses. A
concatenation of several resized producers is scaled as its last one: an approximation the caller
corrects by pricing the pruned model for real.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from energyprune.energy.hardware.kernel_time import fused_ops
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.estimates import EnergyProfile, Totals, price_op, with_forward
from energyprune.energy.tracing.tracer import OpRecord

__all__ = ["Resize", "channel_dim", "rescaled_energy", "rescaled_profile"]


@dataclass(frozen=True)
class Resize:
    """A module's input and output channels as traced (``*_before``) and as proposed."""

    in_before: int
    in_after: int
    out_before: int
    out_after: int

    @property
    def f_in(self) -> float:
        return self.in_after / self.in_before if self.in_before else 1.0

    @property
    def f_out(self) -> float:
        return self.out_after / self.out_before if self.out_before else 1.0


def rescaled_energy(
    prof: EnergyProfile,
    resized: Mapping[str, Resize],
    hw: HardwareProfile,
    dtype: str | None = None,
) -> float:
    """Estimated joules of ``prof``'s model with the modules in ``resized`` resized."""
    return rescaled_profile(prof, resized, hw, dtype).total.energy_j


def _param_op(record: OpRecord, r: Resize) -> OpRecord:
    depthwise = record.kind == "conv" and len(record.channels) == 1  # (C_out,): see formulas
    f_in, f_out = (r.f_out, r.f_out) if depthwise else (r.f_in, r.f_out)
    both = f_out if depthwise else f_in * f_out
    operands = []
    for o in record.operands:
        if o.role == "param":  # a vector (bias, norm) follows the outputs; a matrix both
            f = f_out if o.numel <= r.out_before else both
        else:
            f = f_in if o.role == "input" else f_out
        operands.append(replace(o, numel=round(o.numel * f)))
    return replace(
        record,
        macs=round(record.macs * both),
        ops=round(record.ops * f_out),
        operands=tuple(operands),
        channels=_channels(record, f_in, f_out, depthwise),
        output_shapes=tuple(_narrow(s, f_out) for s in record.output_shapes),
        groups=max(1, round(record.groups * f_out)) if depthwise else record.groups,
    )


def _channels(record: OpRecord, f_in: float, f_out: float, depthwise: bool) -> tuple[int, ...]:
    """The tiled widths: (C_out, C_in/groups) for a conv, (C_out,) for a depthwise one, (K, N)
    for a matmul."""
    c = record.channels
    if depthwise:
        return (round(c[0] * f_out),)
    if len(c) != 2:
        return c
    if record.kind == "conv":
        return (round(c[0] * f_out), c[1] if depthwise else round(c[1] * f_in))
    return (round(c[0] * f_in), round(c[1] * f_out))


def _uniform(record: OpRecord, f: float) -> OpRecord:
    return replace(
        record,
        macs=round(record.macs * f),
        ops=round(record.ops * f),
        operands=tuple(replace(o, numel=round(o.numel * f)) for o in record.operands),
    )


def rescaled_profile(
    prof: EnergyProfile,
    resized: Mapping[str, Resize],
    hw: HardwareProfile,
    dtype: str | None = None,
) -> EnergyProfile:
    """``prof`` with the modules in ``resized`` resized: every op re-priced, the outputs of ops
    without parameters narrowed, totals summed again (layers are left as traced)."""
    coef = hw.coefficients()
    fused = fused_ops([op.record for op in prof.ops], hw.runtime)  # as traced
    ops = []
    follow = 1.0
    for i, op in enumerate(prof.ops):
        record = op.record
        resize = resized.get(record.module)
        if any(o.role == "param" for o in record.operands):
            follow = resize.f_out if resize is not None else 1.0
            scaled = _param_op(record, resize) if resize is not None else None
        else:  # its output's channels are what the next round's savings divide by
            moves = follow != 1.0 and record.operands  # views move nothing: left as traced
            scaled = _uniform(record, follow) if moves else None
            if scaled is not None:
                narrowed = tuple(_narrow(s, follow) for s in record.output_shapes)
                scaled = replace(scaled, output_shapes=narrowed)
        ops.append(op if scaled is None else price_op(scaled, hw, coef, dtype, i in fused))
    return replace(prof, ops=tuple(ops), total=with_forward(Totals.of(ops, prof.total.params), hw))


def channel_dim(shape: tuple[int, ...]) -> int:
    """Index of an activation's channels: 1 for an image-like tensor (N, C, ...), else the last
    (tokens, ..., C)."""
    return 1 if len(shape) in (2, 4, 5) else len(shape) - 1


def _narrow(shape: tuple[int, ...], f: float) -> tuple[int, ...]:
    """``shape`` with its channel dimension scaled."""
    if not shape:
        return shape
    dim = channel_dim(shape)
    return (*shape[:dim], max(round(shape[dim] * f), min(shape[dim], 1)), *shape[dim + 1 :])
