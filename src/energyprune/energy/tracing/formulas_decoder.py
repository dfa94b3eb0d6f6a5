"""Cost formulas for the ops a decoder-only language model adds: static KV-cache updates,
mixture-of-experts routing and grouped expert matmuls. Registered on import, as in
:mod:`energyprune.energy.tracing.formulas`."""

from __future__ import annotations

import torch

from energyprune.energy.tracing.formulas import aten_ops
from energyprune.energy.tracing.registry import Cost, first_tensor, numel, register_formula

__all__: list[str] = []


@register_formula(*aten_ops("index_copy_", "index_put_"))
def _index_update(args, kwargs, out) -> Cost:
    """Scatter ``source`` into ``self`` in place (a static KV cache taking the new token): the
    source and the index are read and only as many elements are written; the rest of ``self``
    is not touched. ``index_copy_(self, dim, index, source)``, ``index_put_(self, indices,
    values)``."""
    if isinstance(args[1], int):  # index_copy_
        index, source = [args[2]], args[3]
    else:
        index, source = [t for t in args[1] if isinstance(t, torch.Tensor)], args[2]
    y = first_tensor(out)
    return Cost("data", reads=(source, *index), writes=((y, min(source.numel(), y.numel())),))


@register_formula(*aten_ops("_grouped_mm"))
def _grouped_mm(args, kwargs, out) -> Cost:
    """Expert matmuls of a mixture of experts in one kernel: ``input`` (rows = tokens × top-k,
    sorted by expert) times a stack of expert weights ``(E, K, N)``. MACs are the active
    experts' only; the whole stack is what the kernel is handed, and the share of it a step
    really reads (the experts its tokens touch) is the regime's to set
    (:func:`energyprune.energy.lm.regimes.touched_experts`)."""
    x, w, y = args[0], args[1], first_tensor(out)
    k = int(x.shape[-1])
    return Cost("matmul", y.numel() * k, 0, (x, w), channels=(k, int(y.shape[-1])))


@register_formula(*aten_ops("topk", "histc"))
def _select(args, kwargs, out) -> Cost:
    """Routing: pick each token's top-k experts and count tokens per expert; one comparison per
    element read. (Sorting tokens by expert stays uncosted and is reported so: its bytes are
    counted, its arithmetic, tiny next to the matmuls it feeds, is not.)"""
    return Cost("reduction", 0, numel(args[0]))


@register_formula(*aten_ops("floor_divide", "remainder"))
def _integer_div(args, kwargs, out) -> Cost:
    return Cost("elementwise", 0, first_tensor(out).numel())
