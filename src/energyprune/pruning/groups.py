"""Prunable channel groups and their physical removal, through Torch-Pruning's DependencyGraph.

Mechanism only (with ``apply.py``, the only Torch-Pruning importer): which channels must go
together (residual adds, concatenation, depthwise convs, norms, attention projections) and how
to remove them. What to remove is decided elsewhere (importance, allocation).

Defaults for transformers: attention **heads** (Hugging Face style attention with
``num_attention_heads`` / ``attention_head_size``, removed a whole head at a time) and MLP
**hidden units**. Groups that touch a LayerNorm or an embedding are the residual width; pruning
them changes LayerNorm statistics, so they are opt-in (``prune_residual=True``). Groups with no
consumer inside the model are the model's outputs and are never pruned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from energyprune.energy.pricing.rescale import Resize
from energyprune.energy.tracing.tensors import as_call
from energyprune.errors import ConfigError
from energyprune.pruning.index_sets import list_groups
from energyprune.pruning.tracing import (
    PRUNABLE,
    TRACE_SECONDS,
    Part,
    TraceTimeout,
    build_graph,
    deadline,
    group_is_safe,
    is_opaque,
    trace_around,
    trace_parts,
)

__all__ = ["ChannelGroup", "Member", "Structure"]

_RESIDUAL_TYPES = (nn.LayerNorm, nn.Embedding)


@dataclass(frozen=True)
class Member:
    """A module a group shrinks: along its outputs (``out``) or inputs, ``per_channel`` of that
    dimension's channels per group channel (more than 1 where a flatten or a concatenation
    spreads a channel over several positions)."""

    name: str
    out: bool
    per_channel: float = 1.0


@dataclass
class ChannelGroup:
    """Channels that are removed together, named by the root module whose outputs they are.

    Attributes:
        root: name of the module whose output channels define the group.
        channels: current width.
        unit: channels per removable unit (1, the head size for attention heads, or the number
            of channel groups when a member is a grouped convolution or a GroupNorm).
        interleaved: a unit is one position in every channel group (channels ``u``,
            ``u + width/unit``, ...), as Torch-Pruning removes them, so that every group keeps
            the same width; otherwise a unit is ``unit`` consecutive channels (a head).
        kind: ``"channel"``, ``"head"`` or ``"residual"``.
        members: the modules whose weights the group touches, each with the dimension it
            shrinks and how many of that dimension's channels one group channel is.
        min_width: the narrowest width allowed (>= one unit).
    """

    root: str
    channels: int
    unit: int
    kind: str
    members: tuple[Member, ...]
    min_width: int = 1
    interleaved: bool = False
    tp_group: Any = field(default=None, repr=False, compare=False)

    @property
    def units(self) -> int:
        return self.channels // self.unit

    def unit_channels(self, u: int) -> list[int]:
        """The channel indices that make up unit ``u`` at the current width."""
        if self.interleaved:
            return [u + k * self.units for k in range(self.unit)]
        return [u * self.unit + j for j in range(self.unit)]

    def per_unit(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-channel scores summed over each unit."""
        scores = scores[: self.units * self.unit]
        if self.interleaved:
            return scores.view(self.unit, -1).sum(dim=0)
        return scores.view(-1, self.unit).sum(dim=1)


def _heads(model: nn.Module) -> dict[str, nn.Module]:
    """Projection name → its attention module, for Hugging Face style self-attention."""
    found = {}
    for name, module in model.named_modules():
        if hasattr(module, "num_attention_heads") and hasattr(module, "attention_head_size"):
            for child in ("query", "key", "value"):
                if isinstance(getattr(module, child, None), nn.Linear):
                    found[f"{name}.{child}" if name else child] = module
    return found


class Structure:
    """A model's dependency graph and its prunable groups, traced and listed once per prune.

    When the whole model does not trace within ``seconds`` (see tracing.py), it is traced part
    by part and only channels internal to a part are offered; ``parts`` then names them, and
    passing it back (a replay) skips the whole-model attempt. A removal shrinks its group in
    place: Torch-Pruning's graph stays valid while layers shrink (its own pruner steps on one
    graph) and a removal never couples or splits groups, so nothing is traced or listed again.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        ignored: Iterable[nn.Module] = (),
        prune_residual: bool = False,
        parts: Sequence[str] | None = None,
        seconds: float = TRACE_SECONDS,
    ) -> None:
        self.model = model
        self.names = {m: n for n, m in model.named_modules()}
        self.modules = dict(model.named_modules())
        self.ignored = list(ignored)
        self.prune_residual = prune_residual
        self.attention = _heads(model)
        self._graph_of: dict[nn.Module, Any] = {}
        self.parts: list[str] | None = None
        self.whole_model_error: str | None = None
        if parts is None:
            args, kwargs = as_call(example_inputs)
            try:
                with deadline(seconds):
                    graph = build_graph(model, args, kwargs)
                    self.groups = self._groups(graph)
                return
            except (Exception, TraceTimeout) as e:  # Torch-Pruning raises bare errors
                first = str(e).splitlines()[0] if str(e) else ""
                self.whole_model_error = f"{type(e).__name__}: {first}".rstrip(": ")
                self._graph_of.clear()
        names = None if parts is None else list(parts)
        found = trace_parts(model, example_inputs, self._part_groups, names)
        if parts is not None and len(found) != len(parts):
            missing = sorted(set(parts) - {p.name for p in found})
            raise ConfigError(f"parts {missing} of the plan no longer trace; rebuild the plan")
        self.parts = [p.name for p in found]
        self.groups = [g for p in found for g in p.groups]
        around = trace_around(model, example_inputs, self.parts, lambda p: self._groups(p.graph))
        if around is not None:
            self.groups += around.groups

    def _part_groups(self, part: Part) -> list[ChannelGroup]:
        groups = self._groups(part.graph)
        return [g for g in groups if group_is_safe(part, self.modules[g.root], g.unit_channels(0))]

    def _members(self, graph, group) -> list[tuple[Member, str]]:
        """Modules with weights in ``group`` (one entry each; a depthwise conv shrinks once)
        with their handler names."""
        found: dict[str, tuple[Member, str]] = {}
        width = max(len(group[0].idxs), 1)
        for item in group:
            module = item.dep.target.module
            name = self.names.get(module)
            if name is None or not any(True for _ in module.parameters(recurse=False)):
                continue
            handler = getattr(item.dep.handler, "__name__", str(item.dep.handler))
            out = bool(graph.is_out_channel_pruning_fn(item.dep.handler))
            if name not in found or (out and not found[name][0].out):
                found[name] = (Member(name, out, len(item.idxs) / width), handler)
        return list(found.values())

    def resizes(self, removed: Mapping[str, Sequence[int]]) -> dict[str, Resize]:
        """Each touched module's widths now and after removing channels ``removed[root]`` of
        each group (for re-pricing a proposal without removing anything)."""
        by_root = {g.root: g for g in self.groups}
        cut_in: Counter[str] = Counter()
        cut_out: Counter[str] = Counter()
        for root, idxs in removed.items():
            k = len(idxs)
            for m in by_root[root].members:
                coupled = self._coupled(m.name)  # a norm: its inputs are its outputs
                if m.out or coupled:
                    cut_out[m.name] += k * m.per_channel
                if not m.out or coupled:
                    cut_in[m.name] += k * m.per_channel
        out = {}
        for name in cut_in.keys() | cut_out.keys():
            i, o = self.width(name, False), self.width(name, True)
            out[name] = Resize(i, round(i - cut_in[name]), o, round(o - cut_out[name]))
        return out

    def _pruner(self, name: str):
        module = self.modules[name]
        return self._graph_of[module].get_pruner_of_module(module)

    def _coupled(self, name: str) -> bool:
        pruner = self._pruner(name)
        return pruner.prune_in_channels == pruner.prune_out_channels

    def width(self, name: str, out: bool) -> int:
        """Current channels of module ``name`` along its outputs or inputs."""
        module, pruner = self.modules[name], self._pruner(name)
        return int(pruner.get_out_channels(module) if out else pruner.get_in_channels(module))

    def _groups(self, graph) -> list[ChannelGroup]:
        groups = []
        for module in graph.module2node:
            if isinstance(module, nn.Module):
                self._graph_of[module] = graph
        for group in list_groups(graph, self.ignored, PRUNABLE):
            if any(is_opaque(item.dep.target.module) for item in group):
                continue  # reaches into a block traced only as a whole: its widths stay
            root_module = group[0].dep.target.module
            root = self.names[root_module]
            members = self._members(graph, group)
            if not any("in_channels" in handler for _, handler in members):
                continue  # no consumer: these channels are the model's output
            residual = any(
                isinstance(self.modules[m.name], _RESIDUAL_TYPES) for m, _ in members
            ) or any(isinstance(item.dep.target.module, nn.MultiheadAttention) for item in group)
            if residual and not self.prune_residual:
                continue
            heads = [m.name for m, h in members if m.name in self.attention and "out_channels" in h]
            unit = self.attention[heads[0]].attention_head_size if heads else 1
            kind = "residual" if residual else ("head" if heads else "channel")
            channels = len(group[0].idxs)
            ch_groups = 1 if heads else self._channel_groups(graph, group)
            if ch_groups > 1 and channels % ch_groups:
                continue  # not evenly grouped: Torch-Pruning cannot keep it valid either
            groups.append(
                ChannelGroup(
                    root=root,
                    channels=channels,
                    unit=max(unit, ch_groups),
                    kind=kind,
                    members=tuple(m for m, _ in members),
                    # two channels per group at least: at one, a grouped conv turns depthwise
                    # for Torch-Pruning (groups == in_channels) and its importance breaks
                    min_width=unit if ch_groups == 1 else min(2 * ch_groups, channels),
                    interleaved=ch_groups > 1,
                    tp_group=group,
                )
            )
        return groups

    @staticmethod
    def _channel_groups(graph, group) -> int:
        """How many channel groups the group's members split these channels into (grouped
        convolutions, GroupNorm); depthwise convolutions do not count (a channel is a group)."""
        most = 1
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or not hasattr(pruner, "get_in_channel_groups"):
                continue
            if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
                continue
            if graph.is_out_channel_pruning_fn(handler):
                most = max(most, int(pruner.get_out_channel_groups(module)))
            else:
                most = max(most, int(pruner.get_in_channel_groups(module)))
        return most

    def group_for(self, root: str, idxs: Sequence[int]):
        """The Torch-Pruning group removing output channels ``idxs`` of module ``root``."""
        module = self.modules[root]
        graph = self._graph_of.get(module)
        if graph is None:
            raise ConfigError(f"layer '{root}' is not in a traced part of this model")
        pruner = graph.get_pruner_of_module(module)
        return graph.get_pruning_group(module, pruner.prune_out_channels, list(idxs))

    def remove(self, root: str, idxs: Sequence[int]) -> list[dict[str, Any]]:
        """Physically remove output channels ``idxs`` of ``root`` and everything coupled to them.

        Returns the touched members as ``{"module", "handler", "idxs"}`` (for plans and audits).
        """
        group = self.group_for(root, sorted(int(i) for i in idxs))
        touched = []
        for item in group:
            name = self.names.get(item.dep.target.module)
            if name is not None:
                handler = getattr(item.dep.handler, "__name__", str(item.dep.handler))
                touched.append(
                    {"module": name, "handler": handler, "idxs": sorted(int(i) for i in item.idxs)}
                )
        group.prune()
        self._update_heads(touched)
        for listed in self.groups:
            if listed.root == root:
                listed.channels -= len(set(idxs))
                listed.tp_group = None  # its indices are stale; group_for gives a fresh one
        return touched

    def _update_heads(self, touched: list[dict[str, Any]]) -> None:
        for entry in touched:
            attention = self.attention.get(entry["module"])
            if attention is None or "out_channels" not in entry["handler"]:
                continue
            width = self.modules[entry["module"]].out_features
            attention.num_attention_heads = width // attention.attention_head_size
            attention.all_head_size = width
            return

    def importance(self, group: ChannelGroup, criterion) -> torch.Tensor:
        """Per-channel importance of ``group`` at its current width (higher = keep)."""
        tp_group = group.tp_group
        if tp_group is None:
            tp_group = self.group_for(group.root, range(group.channels))
        with torch.no_grad():
            scores = criterion(tp_group)
        if scores is None:
            return torch.zeros(group.channels)
        return scores.detach().float().cpu()
