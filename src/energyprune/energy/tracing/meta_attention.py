"""Fused attention on the meta device, priced as the kernel a GPU runs.

``F.scaled_dot_product_attention`` is composite: on CPU and CUDA it dispatches to a fused kernel
(flash, memory-efficient) that reads Q, K and V once and writes only the output, but on the meta
device (a model built from its config alone) it falls back to the math path: a score matrix, a
softmax, copies of K and V to fp32. Priced op by op, that path would charge a decode step for
the cache twice over and for bytes no server moves. :class:`MetaAttention` catches the call
before it decomposes, gives back an empty output of the right shape and layout, and records one
fused attention op priced by the same formula as the real kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from energyprune.energy.tracing.formulas import sdpa_attention_cost
from energyprune.energy.tracing.registry import Cost

__all__ = ["FUSED_OP", "MetaAttention"]

#: The name fused attention on the meta device is recorded under.
FUSED_OP = "aten._scaled_dot_product_fused_attention (meta)"

Record = Callable[[str, Cost, tuple, dict, torch.Tensor], None]


class MetaAttention(TorchFunctionMode):
    """Records meta-device SDPA calls through ``record(op, cost, args, kwargs, out)``."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or not args[0].is_meta:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        causal = bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False))
        with _disable_current_modes():  # the output is allocated, not an op of the model
            shape = (*q.shape[:-1], v.shape[-1])
            if q.dim() == 4:  # fused kernels write (B, L, H, E) and return its transpose
                out = torch.empty(
                    shape[0], shape[2], shape[1], shape[3], dtype=q.dtype, device=q.device
                ).transpose(1, 2)
            else:
                out = torch.empty(shape, dtype=q.dtype, device=q.device)
        reads = (q, k, v) if mask is None else (q, k, v, mask)
        self.record(FUSED_OP, sdpa_attention_cost(q, k, v, causal, reads), reads, {}, out)
        return out
