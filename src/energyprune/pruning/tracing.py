"""Tracing a model for Torch-Pruning, with a time limit and a fallback to its parts.

Torch-Pruning's tracer follows every tensor through reshapes. Some architectures defeat it:
channel shuffle (ShuffleNet) views channels as ``(groups, c/groups)`` and transposes them, so
the tracer divides by zero; in Swin's window attention the tracer misreads a view as a flatten
on a loop, so a group's index set grows without end (index_sets.py: stopped the moment a set
outgrows every tensor dimension, and such blocks found by a dry run on meta tensors before the
per-part pass). Neither is a bug we can fix from outside, but both models are made of small
parts that trace well (a branch of convolutions, an MLP). When the whole model does not trace
within the time limit (or its sets grow without bound), we trace its largest parts that do,
each on the inputs it received in one forward pass, and prune only channels internal to a
part: its outputs keep their width, so the shuffle or the window attention around it sees the
same shapes. Every internal group is checked once on a copy of its part (remove one unit, run,
compare output shapes) before it is offered.

The model around the parts is traced too, with each part and each block that holds parts
stood in for by one opaque node (:func:`trace_around`): that finds the channels between
blocks, such as ShuffleNet's last 1x1 convolution feeding the classifier, which is most of its
compute. Groups that reach an opaque node are dropped, so the blocks keep their widths.
"""

from __future__ import annotations

import copy
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from energyprune.energy.tracing.tensors import as_call, tensors_in
from energyprune.pruning.index_sets import UnboundedGroup, list_groups, on_meta

__all__ = [
    "PART_SECONDS",
    "PRUNABLE",
    "TRACE_SECONDS",
    "Part",
    "TraceTimeout",
    "deadline",
    "is_opaque",
    "trace_around",
    "trace_parts",
    "unbounded_parts",
]

# limits in CPU seconds of this process (see deadline)
TRACE_SECONDS = 30.0  # whole model: build the graph and list its groups
PART_SECONDS = 5.0  # one part (a block that traces takes ~50 ms; this only stops a runaway)
_NOT_HERE = ("/_pytest/", "/pluggy/", "/hypothesis/", "/_dynamo/", "weakref")
AROUND_SECONDS = 5.0  # the model around its parts
PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)  # layers whose output channels root a group


class TraceTimeout(BaseException):
    """Tracing ran past its time limit. A BaseException, and re-raised every 50 ms until the
    block ends, because Torch-Pruning's tracer catches ``Exception`` in places and would
    otherwise swallow it and run on (Swin: tens of GB, seen in CI)."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TraceTimeout` in the block after ``seconds`` of this process's CPU time
    (main thread, POSIX only: elsewhere the block runs without a limit). CPU time, not wall
    time: a machine busy with other work must not change what gets traced, and so pruned."""
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _expire(signum, frame):
        # not inside a garbage-collection or weakref callback, or a test runner's hook: an
        # exception there is "unraisable" and lost; the alarm re-fires 50 ms later anyway
        if frame is not None and any(p in frame.f_code.co_filename for p in _NOT_HERE):
            return
        raise TraceTimeout(f"tracing took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGPROF, _expire)
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def build_graph(
    module: nn.Module, args: tuple, kwargs: dict, customized: dict | None = None
) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``module`` called as ``module(*args, **kwargs)``.
    Its tracer follows autograd, so grad mode is on whatever the caller's (``prune`` called
    inside ``torch.no_grad()`` would otherwise find no dependencies). The graph also gets
    ``longest_dim``, the longest dimension of any tensor the trace saw (see index_sets.py)."""
    sizes = [_longest(t) for t in (*module.parameters(), *module.buffers(), *tensors_in(args))]
    sizes += [_longest(t) for t in tensors_in(kwargs)]

    def record(mod, inputs, out):
        sizes.extend(_longest(t) for t in tensors_in((inputs, out)))

    hook = nn.modules.module.register_module_forward_hook(record)
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                module,
                example_inputs=(args, kwargs),
                forward_fn=lambda m, inputs: m(*inputs[0], **inputs[1]),
                customized_pruners=customized,
                verbose=False,
            )
    finally:
        hook.remove()
    graph.longest_dim = max(sizes, default=0)
    return graph


def _longest(t: torch.Tensor) -> int:
    return max(t.shape, default=1)


@dataclass
class Part:
    """A traced submodule: its name, its graph, the inputs it was traced on, its groups."""

    name: str
    graph: tp.DependencyGraph
    args: tuple
    kwargs: dict
    groups: list = field(default_factory=list)


def _recorded_inputs(model: nn.Module, example_inputs: Any) -> dict[str, tuple[tuple, dict]]:
    """Inputs of every submodule called exactly once in one forward pass."""
    seen: dict[str, list] = {}
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(mod, args, kwargs, name=name):
            seen.setdefault(name, []).append((args, kwargs))

        hooks.append(module.register_forward_pre_hook(record, with_kwargs=True))
    args, kwargs = as_call(example_inputs)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: calls[0] for name, calls in seen.items() if len(calls) == 1}


def _prunable_count(module: nn.Module) -> int:
    return sum(isinstance(m, PRUNABLE) for m in module.modules())


def _output_shapes(out: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in tensors_in(out)]


def group_is_safe(part: Part, root: nn.Module, unit_channels: list[int]) -> bool:
    """Remove one unit of the group rooted at ``root`` from a copy of the part and run it: safe
    when it runs and every output keeps its shape."""
    module = part.graph.model
    memo: dict[int, Any] = {}
    clone = copy.deepcopy(module, memo)
    clone_root = memo.get(id(root))
    try:
        graph = build_graph(clone, part.args, part.kwargs)
        pruner = graph.get_pruner_of_module(clone_root)
        graph.get_pruning_group(clone_root, pruner.prune_out_channels, unit_channels).prune()
        with torch.no_grad():
            want = _output_shapes(module(*part.args, **part.kwargs))
            got = _output_shapes(clone(*part.args, **part.kwargs))
    except Exception:  # any failure means the group is not safe to offer
        return False
    return want == got


def trace_parts(
    model: nn.Module,
    example_inputs: Any,
    groups_of: Callable[[Part], list],
    names: list[str] | None = None,
    seconds: float = PART_SECONDS,
) -> list[Part]:
    """The largest submodules that trace and list their groups (``groups_of``) within
    ``seconds`` each; or exactly the parts ``names`` (a replay).

    A part needs two prunable layers or more (else it has no internal channels); a part
    that fails or times out is replaced by its children.
    """
    inputs = _recorded_inputs(model, example_inputs)
    modules = dict(model.named_modules())
    parts: list[Part] = []
    unbounded = set() if names is not None else unbounded_parts(model, inputs, seconds)

    # a replay names parts that traced before: a busy machine must not make them fail now
    limit = seconds if names is None else max(seconds, TRACE_SECONDS)

    def attempt(name: str) -> bool:
        if name not in inputs:
            return False
        args, kwargs = inputs[name]
        try:
            with deadline(limit):
                part = Part(name, build_graph(modules[name], args, kwargs), args, kwargs)
                part.groups = groups_of(part)
        except (Exception, TraceTimeout):  # Torch-Pruning raises bare errors: try the children
            return False
        parts.append(part)
        return True

    if names is None:
        _largest_parts(model, lambda name: name not in unbounded and attempt(name))
    else:
        for name in names:
            attempt(name)
    return parts


def unbounded_parts(
    model: nn.Module, inputs: dict[str, tuple[tuple, dict]], seconds: float = PART_SECONDS
) -> set[str]:
    """The submodules whose groups grow without bound (see index_sets.py), found by tracing
    on meta tensors in the order the per-part pass visits them, before it starts: a dry run
    costs no arithmetic, so a Swin block is known in milliseconds, not traced for real."""
    meta, calls = on_meta(model, inputs)
    modules = dict(meta.named_modules())
    found: set[str] = set()

    def traces(name: str) -> bool:
        if name not in calls:
            return False
        try:
            with deadline(seconds):
                list_groups(build_graph(modules[name], *calls[name]), [], PRUNABLE)
        except UnboundedGroup:
            found.add(name)
            return False
        except (Exception, TraceTimeout):  # the real attempt decides; its children may not
            return False
        return True

    _largest_parts(meta, traces)  # in the order the per-part pass visits them
    return found


def _largest_parts(model: nn.Module, takes: Callable[[str], bool]) -> None:
    """Offer each submodule with two prunable layers or more to ``takes``, outermost first;
    where it is not taken, offer its children instead."""

    def visit(name: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if _prunable_count(child) >= 2 and not takes(full):
                visit(full, child)

    visit("", model)


class _Cut(torch.autograd.Function):
    """Runs a call as one autograd node, so the tracer sees its inputs and outputs only."""

    @staticmethod
    def forward(ctx, call, *tensors):
        return call(*tensors)

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - the tracer never differentiates
        raise RuntimeError("an opaque block is for tracing only")


class _Opaque(nn.Module):
    """Stands in for a block while the model around it is traced. The block is held as a plain
    attribute, not a child, so the tracer neither sees nor hooks anything inside it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "inner", inner)
        self.in_channels = self.out_channels = 0

    def forward(self, *args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]

        def call(*given):
            it = iter(given)
            real = [next(it) if isinstance(a, torch.Tensor) else a for a in args]
            return self.inner(*real, **kwargs)

        out = _Cut.apply(call, *tensors)
        first = tensors_in(out)
        self.in_channels = tensors[0].shape[1] if tensors and tensors[0].dim() > 1 else 0
        self.out_channels = first[0].shape[1] if first and first[0].dim() > 1 else 0
        return out


class _OpaquePruner(tp.pruner.function.BasePruningFunc):
    """Channel counts for the tracer's bookkeeping; a group that reaches an opaque block is
    never pruned (see :func:`is_opaque`), so removal does nothing."""

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs) -> nn.Module:
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels


def is_opaque(module: Any) -> bool:
    """Whether a graph node stands in for a whole block (see :func:`trace_around`)."""
    return isinstance(module, _Opaque)


def _opaque_names(parts: list[str]) -> list[str]:
    """The parts and the blocks that hold them, outermost only, never the model itself."""
    names = set(parts) | {p.rpartition(".")[0] for p in parts if "." in p}
    return sorted(n for n in names if not any(n.startswith(o + ".") for o in names))


def trace_around(
    model: nn.Module,
    example_inputs: Any,
    parts: list[str],
    groups_of: Callable[[Part], list],
    seconds: float = AROUND_SECONDS,
) -> Part | None:
    """The model traced with every part, and every block holding parts, as one opaque node;
    ``None`` when even that does not trace within ``seconds``."""
    modules = dict(model.named_modules())
    swapped = []
    args, kwargs = as_call(example_inputs)
    try:
        for name in _opaque_names(parts):
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name]
            swapped.append((parent, child, parent._modules[child]))
            parent._modules[child] = _Opaque(parent._modules[child])
        with deadline(seconds):
            graph = build_graph(model, args, kwargs, {_Opaque: _OpaquePruner()})
            part = Part("", graph, args, kwargs)
            part.groups = groups_of(part)
    except (Exception, TraceTimeout):  # the model around the parts does not trace either
        return None
    finally:
        for parent, child, inner in swapped:
            parent._modules[child] = inner
    return part
