"""What an executed op costs before a profile prices it, and the registry of formulas.

The registry follows ``torch.utils.flop_counter``: one pure function per aten op packet, added with
:func:`register_formula`; views, pointwise ops and reductions are priced by rule
(:func:`generic_cost`). The formulas themselves live in :mod:`energyprune.energy.tracing.formulas`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from energyprune.errors import UnsupportedOpError

__all__ = [
    "FORMULAS",
    "Cost",
    "Formula",
    "first_tensor",
    "generic_cost",
    "has_rule",
    "numel",
    "register_formula",
]


@dataclass(frozen=True)
class Cost:
    """What one executed op costs, before a hardware profile prices it.

    Attributes:
        kind: category shown in profiles (conv, matmul, attention, norm, pool, elementwise,
            reduction, embedding, data, view).
        macs: dense multiply-accumulates.
        ops: other arithmetic operations, each charged as one add.
        mac_operands: tensors the MACs are performed against, each whole or as
            ``(tensor, macs)`` when a fused op splits its MACs between weights; zero-skipping
            hardware skips the MACs against zero *parameter* elements among them. MACs that a
            split names against no parameter (attention scores) are never skipped.
        reads: tensors read, each whole or as ``(tensor, elements_read)``; ``None`` = every
            tensor argument is read whole.
        writes_output: False for ops that only alias their input (views move no bytes).
        writes: elements written per output, as ``(tensor, elements)``, for in-place updates
            that write part of their output (a KV cache gaining one token); ``None`` = every
            output is written whole (when ``writes_output``).
        channels: the reduction/output widths of a MAC op (conv: C_out, C_in/groups; matmul:
            k, n); hardware with a preferred ``channel_multiple`` runs others less efficiently.
        groups: a convolution's groups (depthwise and grouped convs run other kernels).
    """

    kind: str
    macs: int = 0
    ops: int = 0
    mac_operands: tuple[torch.Tensor | tuple[torch.Tensor, int], ...] = ()
    reads: tuple[torch.Tensor | tuple[torch.Tensor, int], ...] | None = None
    writes_output: bool = True
    writes: tuple[tuple[torch.Tensor, int], ...] | None = None
    channels: tuple[int, ...] = ()
    groups: int = 1


Formula = Callable[[Sequence[object], dict[str, object], object], Cost]
FORMULAS: dict[torch._ops.OpOverloadPacket, Formula] = {}


def register_formula(*packets: torch._ops.OpOverloadPacket) -> Callable[[Formula], Formula]:
    """Register ``fn`` as the cost formula of each aten op packet (e.g. ``aten.mm``)."""

    def decorator(fn: Formula) -> Formula:
        for packet in packets:
            if not isinstance(packet, torch._ops.OpOverloadPacket):
                raise UnsupportedOpError(
                    f"register_formula expects aten op packets such as aten.mm, got {packet!r}"
                )
            if packet in FORMULAS:
                raise UnsupportedOpError(f"duplicate cost formula for {packet}")
            FORMULAS[packet] = fn
        return fn

    return decorator


def numel(t: object) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def first_tensor(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise UnsupportedOpError(f"expected a tensor output, got {type(out).__name__}")


def has_rule(func: torch._ops.OpOverload) -> bool:
    """True when :func:`generic_cost` prices ``func`` (views, pointwise ops, reductions)."""
    return func.is_view or bool({torch.Tag.pointwise, torch.Tag.reduction} & set(func.tags))


def generic_cost(func: torch._ops.OpOverload, args: Sequence[object], out: object) -> Cost | None:
    """Cost of ops covered by a rule rather than a formula: views, pointwise ops, reductions.

    Returns None when no rule applies (the op is then reported as uncosted).
    """
    if func.is_view:
        return Cost("view", reads=(), writes_output=False)
    tags = func.tags
    if torch.Tag.pointwise in tags:
        return Cost("elementwise", 0, first_tensor(out).numel())
    if torch.Tag.reduction in tags:
        source = next((a for a in args if isinstance(a, torch.Tensor)), None)
        return Cost("reduction", 0, numel(source))
    return None
