"""Torch-Pruning's index sets, bounded: a group that would grow without end is refused at once.

Torch-Pruning lists a group by carrying the root's channel indices from node to node, through
an index mapping at each reshape, concatenation or split. A set lists positions along one
dimension of one tensor, so no real set is longer than the longest dimension of any tensor in
the graph (a flatten's positions are the input dimension of the layer it feeds). Swin breaks
this: its window attention calls its projections as ``F.linear`` on their weights and adds a
per-head bias, so the tracer follows the residual width into the attention scores, reads their
view as a flatten (stride C/heads = 32) and the block's residual add brings the set round the
loop again, 32 times longer each pass. Listing never ends (tens of GB); it used to be stopped
only by the time limit, after 30 s for the model and 5 s for each block. Here it stops the
moment a set outgrows every dimension, and a dry run on meta tensors finds such blocks before
anything is traced on real ones.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map_only
from torch_pruning.dependency import index_mapping

__all__ = ["UnboundedGroup", "list_groups", "on_meta"]


class UnboundedGroup(Exception):
    """A group's index set outgrew every dimension of every tensor the trace saw."""


@contextmanager
def _bounded(limit: int) -> Iterator[None]:
    """Raise :class:`UnboundedGroup` in the block when Torch-Pruning's flatten mapping (its one
    mapping that lengthens a set) would build a set of more than ``limit`` indices. Where a
    Torch-Pruning release renames the mapping, the block runs unguarded (the time limit stays)."""
    mapping = getattr(index_mapping, "_FlattenIndexMapping", None)
    if mapping is None:
        yield
        return
    original = mapping.__call__

    def call(self, idxs):
        if not getattr(self, "reverse", True) and len(idxs) * self._stride > limit:
            raise UnboundedGroup(
                f"index sets outgrew every tensor dimension ({limit:,}): "
                "a reshape read as a flatten on a loop"
            )
        return original(self, idxs)

    mapping.__call__ = call
    try:
        yield
    finally:
        mapping.__call__ = original


def list_groups(graph: Any, ignored: list, roots: tuple[type, ...]) -> list:
    """Torch-Pruning's groups of ``graph`` rooted at layers of types ``roots``, or
    :class:`UnboundedGroup` as soon as a set outgrows ``graph.longest_dim`` (set by
    tracing.build_graph; unbounded where absent)."""
    with _bounded(getattr(graph, "longest_dim", 0) or 2**62):
        return list(graph.get_all_groups(ignored_layers=ignored, root_module_types=roots))


def on_meta(model: nn.Module, calls: Any) -> tuple[nn.Module, Any]:
    """A copy of ``model`` and of ``calls`` (any nest of inputs) with every tensor on the meta
    device: shapes without data, so a trace costs no arithmetic. Tensors that a module holds
    outside its parameters and buffers are copied as they are."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    meta = copy.deepcopy(model, memo)
    return meta, tree_map_only(torch.Tensor, lambda t: torch.empty_like(t, device="meta"), calls)
