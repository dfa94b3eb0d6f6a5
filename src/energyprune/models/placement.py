"""Where a model lives: one helper to make example inputs and move batches onto the model's
device and into its floating dtype.

Every forward pass the product runs (tracing, pruning, fine-tuning, evaluation, measurement)
takes its inputs through :func:`example_input` or :func:`to_model`, so a model held on a GPU,
or in float64 / bfloat16, never meets a CPU float32 tensor it cannot multiply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map_only

__all__ = ["Placement", "example_input", "placement", "to_model"]


@dataclass(frozen=True)
class Placement:
    """The device a model's weights are on and the floating dtype it computes in."""

    device: torch.device
    dtype: torch.dtype


def placement(model: nn.Module) -> Placement:
    """The device and floating dtype of ``model``'s first floating parameter (else buffer);
    CPU float32 for a model with neither."""
    tensors = [*model.parameters(), *model.buffers()]
    floating = [t for t in tensors if t.is_floating_point()]
    if floating:
        return Placement(floating[0].device, floating[0].dtype)
    if tensors:
        return Placement(tensors[0].device, torch.get_default_dtype())
    return Placement(torch.device("cpu"), torch.get_default_dtype())


def example_input(
    model: nn.Module, shape: tuple[int, ...] | list[int], *, zeros: bool = False
) -> torch.Tensor:
    """A random (or zero) input of ``shape``, made on the model's device in its dtype."""
    where = placement(model)
    make = torch.zeros if zeros else torch.randn
    return make(*shape, device=where.device, dtype=where.dtype)


def to_model(batch: Any, model: nn.Module | Placement, *, non_blocking: bool = False) -> Any:
    """``batch`` (a tensor, or a nest of tuples, lists and dicts of them) on the model's
    device; floating tensors also cast to its dtype, integer ones (labels, token ids) keep
    theirs. Pass a :class:`Placement` in loops to look the model up once."""
    where = model if isinstance(model, Placement) else placement(model)

    def move(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            return t.to(where.device, where.dtype, non_blocking=non_blocking)
        return t.to(where.device, non_blocking=non_blocking)

    return tree_map_only(torch.Tensor, move, batch)
