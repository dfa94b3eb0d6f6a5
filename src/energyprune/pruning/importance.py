"""Importance criteria (policy): a score per channel of a group, higher = more worth keeping.

The scores come from Torch-Pruning's maintained estimators (group magnitude, Taylor, BN scale,
random); for ``energy`` the allocator divides a member-summed L2 score
(:class:`MemberSumImportance`) by the group's estimated energy saving per channel (value per
joule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from energyprune.energy.tracing.tensors import as_call
from energyprune.errors import ConfigError
from energyprune.models.placement import placement, to_model

__all__ = ["CRITERIA", "Criterion", "make_importance", "taylor_gradients"]


class MemberSumImportance(tp.importance.GroupMagnitudeImportance):
    """Group L2 magnitude where each member layer's scores are divided by their mean and then
    *summed*: a channel feeding many layers (a residual stream) weighs once per layer it feeds,
    just as its energy saving does — so importance per joule compares like with like."""

    def __init__(self) -> None:
        super().__init__(p=2, group_reduction="sum", normalizer=None)

    def _reduce(self, group_imp, group_idxs):
        normed = [imp / imp.float().mean().clamp_min(1e-12) for imp in group_imp]
        return super()._reduce(normed, group_idxs)


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: its Torch-Pruning importance factory (called once per round),
    whether scoring needs gradients first, and whether the allocator ranks it per joule saved
    (else per channel removed, like Torch-Pruning's global ranking)."""

    make: Callable[[], Any]
    needs_gradients: bool = False
    per_joule: bool = False


#: criterion name → :class:`Criterion`
CRITERIA: dict[str, Criterion] = {
    "l1": Criterion(lambda: tp.importance.GroupMagnitudeImportance(p=1)),
    "l2": Criterion(lambda: tp.importance.GroupMagnitudeImportance(p=2)),
    "energy": Criterion(MemberSumImportance, per_joule=True),
    "taylor": Criterion(lambda: tp.importance.GroupTaylorImportance(), needs_gradients=True),
    "bn_scale": Criterion(lambda: tp.importance.BNScaleImportance()),
    "random": Criterion(lambda: tp.importance.RandomImportance()),
}


def make_importance(criterion: str) -> Any:
    """The Torch-Pruning importance object for ``criterion``."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion '{criterion}': choose one of {', '.join(CRITERIA)}")
    return CRITERIA[criterion].make()


def taylor_gradients(
    model: nn.Module,
    example_inputs: Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
) -> None:
    """Accumulate gradients for first-order Taylor importance.

    With labelled ``batches`` the loss is cross-entropy; without data it is the squared output
    norm on the example inputs (a data-free fallback: it ranks channels by their effect on the
    output, not on accuracy).
    """
    model.zero_grad(set_to_none=True)
    model.train(False)
    with torch.enable_grad():
        if batches is None:
            args, kwargs = as_call(example_inputs)
            out = model(*args, **kwargs)
            out = out if isinstance(out, torch.Tensor) else out[0]
            (out.float() ** 2).mean().backward()
            return
        where = placement(model)
        for x, y in batches:
            x, y = to_model((x, y), where)
            nn.functional.cross_entropy(model(x), y).backward()
