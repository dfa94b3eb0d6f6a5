"""Dispatch-level tracer: every aten op of one forward pass, with shapes, dtypes and owner module.

It runs the model for real under a ``TorchDispatchMode`` (the mechanism behind
``torch.utils.flop_counter``), so functional calls, fused kernels and data-dependent control flow
are seen exactly as executed. Module attribution comes from a stack kept by forward pre/post
hooks. Nothing is priced here: :mod:`energyprune.energy.pricing.estimates` applies a hardware
profile.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedFakeTensorException,
    UnsupportedOperatorException,
)
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_map_only

from energyprune.energy.tracing import (  # noqa: F401  (importing them registers the op formulas)
    formulas,
    formulas_decoder,
)
from energyprune.energy.tracing.meta_attention import MetaAttention
from energyprune.energy.tracing.registry import FORMULAS, Cost, generic_cost, has_rule
from energyprune.energy.tracing.storage import read_once, storage_key
from energyprune.energy.tracing.tensors import as_call, dtype_name, tensors_in
from energyprune.errors import first_line

__all__ = ["ModuleInfo", "OpRecord", "Operand", "Trace", "trace"]

#: What fake tensors raise where a forward needs values or an op has no fake kernel; any
#: other error (a device or dtype mismatch, a wrong shape) is the model's and propagates.
_FAKE_LIMITS: tuple[type[BaseException], ...] = (
    DataDependentOutputException,
    DynamicOutputShapeException,
    UnsupportedOperatorException,
    UnsupportedFakeTensorException,
    GuardOnDataDependentSymNode,
)
_log = logging.getLogger("energyprune")

#: Ops that carry no data or arithmetic and are not worth a record.
_SKIP = {"prim.device", "aten.sym_size", "aten.sym_stride", "aten.sym_numel", "aten.is_same_size"}


@dataclass(frozen=True)
class Operand:
    """One tensor an op reads or writes.

    Attributes:
        role: ``"param"`` (a parameter or buffer of the model), ``"kv"`` (a KV-cache tensor
            handed to :func:`trace`, read or written), ``"input"`` or ``"output"``.
        numel: elements moved.
        dtype: short dtype name as traced (``"fp32"``).
        density: fraction of non-zero elements (parameters only; 1.0 otherwise).
        name: parameter or buffer name for ``role="param"``, cache entry for ``role="kv"``.
    """

    role: str
    numel: int
    dtype: str
    density: float = 1.0
    name: str | None = None


@dataclass(frozen=True)
class OpRecord:
    """One executed aten op and its hardware-independent cost.

    Attributes:
        op: aten overload name, e.g. ``"aten.convolution.default"``.
        kind: category from the formula (conv, matmul, attention, norm, pool, elementwise,
            reduction, embedding, data, view) or ``"uncosted"`` when no formula applies.
        module: innermost module path that executed it (``""`` = the root module).
        macs: dense multiply-accumulates.
        ops: other arithmetic operations (charged as adds).
        mac_density: fraction of the MACs against non-zero parameter elements.
        operands: tensors read and written.
        input_shapes / output_shapes: shapes of tensor arguments and results.
        channels: widths of a MAC op that hardware tiles (see ``Cost.channels``).
        groups: a convolution's groups (1 for every other op).
    """

    op: str
    kind: str
    module: str
    macs: int
    ops: int
    mac_density: float
    operands: tuple[Operand, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    channels: tuple[int, ...] = ()
    groups: int = 1


@dataclass(frozen=True)
class ModuleInfo:
    """A module of the traced model: its class name and the parameters it owns directly."""

    type: str
    params: int


@dataclass(frozen=True)
class Trace:
    """Result of :func:`trace`: op records in execution order plus module metadata."""

    records: tuple[OpRecord, ...]
    modules: Mapping[str, ModuleInfo]
    input_shapes: tuple[tuple[int, ...], ...]
    params: int
    uncosted_ops: Mapping[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


class _ModuleStack:
    """Forward pre/post hooks that keep the path of the innermost running module."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[str] = [""]
        self._handles = []
        for name, module in model.named_modules():
            if not name:
                continue
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._exit(name), always_call=True))

    def _enter(self, name: str):
        def hook(module, args):
            self.stack.append(name)

        return hook

    def _exit(self, name: str):
        def hook(module, args, output):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _TraceMode(TorchDispatchMode):
    def __init__(
        self, param_names: dict[int, str], modules: _ModuleStack, kv_names: dict[int, str]
    ) -> None:
        super().__init__()
        self.param_names = param_names
        self.kv_names = kv_names
        self.modules = modules
        self.records: list[OpRecord] = []
        self.uncosted: Counter[str] = Counter()
        self._densities: dict[tuple, float] = {}  # a weight is read by several formulas
        self.real_of: dict[int, torch.Tensor] = {}  # fake storage → the real parameter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        if name in _SKIP:
            return func(*args, **kwargs)
        formula = FORMULAS.get(func.overloadpacket)
        if formula is None and not has_rule(func):
            # Composite ops that reach us (no formula, no rule) are costed by their parts.
            with self:
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        out = func(*args, **kwargs)
        cost = formula(args, kwargs, out) if formula else generic_cost(func, args, out)
        if cost is None:
            self.uncosted[str(func)] += 1
            cost = Cost("uncosted")
        self.records.append(self._record(str(func), cost, args, kwargs, out))
        return out

    def add_record(self, op: str, cost: Cost, args, kwargs, out) -> None:
        """Record an op priced outside the dispatcher (fused attention on the meta device)."""
        self.records.append(self._record(op, cost, args, kwargs, out))

    def _param_name(self, t: torch.Tensor) -> str | None:
        key = storage_key(t)
        return None if key is None else self.param_names.get(key)

    def _density(self, t: torch.Tensor) -> float:
        """Fraction of non-zero elements of a parameter, counted once per trace (on the real
        weights when the forward runs on fake tensors)."""
        if not t.numel():
            return 1.0
        key = (storage_key(t), t.storage_offset(), t.numel(), t.stride())
        if key not in self._densities:
            real = self.real_of.get(key[0])
            with _disable_current_modes():  # a real count, also under a FakeTensorMode
                if real is not None:
                    t = real.as_strided(t.shape, t.stride(), t.storage_offset())
                # weights on the meta device (a model built from its config alone) hold no
                # values: priced dense
                self._densities[key] = (
                    1.0 if t.is_meta else float(torch.count_nonzero(t)) / t.numel()
                )
        return self._densities[key]

    def _read(self, t: torch.Tensor, numel: int) -> Operand:
        """A tensor the op reads: a parameter when its storage is one of the model's."""
        kv = self.kv_names.get(storage_key(t))
        if kv is not None:
            return Operand("kv", numel, dtype_name(t.dtype), name=kv)
        pname = self._param_name(t)
        density = self._density(t) if pname is not None else 1.0
        return Operand(
            role="param" if pname is not None else "input",
            numel=numel,
            dtype=dtype_name(t.dtype),
            density=density,
            name=pname,
        )

    def _record(self, op: str, cost: Cost, args, kwargs, out) -> OpRecord:
        in_tensors, out_tensors = tensors_in((args, kwargs)), tensors_in(out)
        reads = in_tensors if cost.reads is None else cost.reads
        operands = [self._read(t, n) for t, n in read_once(reads)]
        writes = cost.writes
        if writes is None:
            writes = tuple((t, t.numel()) for t in out_tensors) if cost.writes_output else ()
        operands += [self._written(t, n) for t, n in writes]
        return OpRecord(
            op=op,
            kind=cost.kind,
            module=self.modules.stack[-1],
            macs=int(cost.macs),
            ops=int(cost.ops),
            mac_density=self._mac_density(cost),
            operands=tuple(operands),
            input_shapes=tuple(tuple(t.shape) for t in in_tensors),
            output_shapes=tuple(tuple(t.shape) for t in out_tensors),
            channels=tuple(int(c) for c in cost.channels),
            groups=int(cost.groups),
        )

    def _written(self, t: torch.Tensor, numel: int) -> Operand:
        kv = self.kv_names.get(storage_key(t))
        return Operand("output" if kv is None else "kv", numel, dtype_name(t.dtype), name=kv)

    def _mac_density(self, cost: Cost) -> float:
        """Share of the op's MACs against non-zero weights. A whole operand that is a parameter
        scales every MAC (two such operands: both must be non-zero); a ``(weight, macs)`` split
        scales only that weight's MACs, and MACs named against no weight (activation ×
        activation, as in attention scores) stay dense."""
        whole, split, named = 1.0, 0.0, 0
        for item in cost.mac_operands:
            t, share = item if isinstance(item, tuple) else (item, None)
            if self._param_name(t) is None:
                continue
            if share is None:
                whole *= self._density(t)
            else:
                split += share * self._density(t)
                named += share
        if not named or not cost.macs:
            return whole
        return whole * (split + max(0, cost.macs - named)) / cost.macs


def trace(
    model: nn.Module,
    example_inputs: Any,
    *,
    eval_mode: bool = True,
    shapes_only: bool = False,
    kv_cache: Mapping[str, torch.Tensor] | None = None,
) -> Trace:
    """Run one forward pass of ``model`` and record every executed aten op.

    Args:
        model: any ``nn.Module``.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        eval_mode: run in ``eval()`` (inference costs; restored afterwards).
        shapes_only: run the forward on fake tensors (shapes, no arithmetic: a pruning round
            prices a ResNet-50 at 224² in a fraction of a real forward); weight densities are
            still counted on the real weights. A model whose forward needs values (data-
            dependent control flow) is traced for real instead.
        kv_cache: name → tensor of a KV cache the inputs hold; reads and writes of their memory
            are recorded as ``role="kv"`` (what a decode step pays per token of context). A
            model on the meta device is traced for real (meta kernels compute no values).

    Returns:
        A :class:`Trace`. The caller's grad mode is respected, so fused inference kernels appear
        under ``torch.no_grad()`` exactly as they would in deployment.
    """
    kv_names = {storage_key(t): name for name, t in (kv_cache or {}).items()}
    if shapes_only and not kv_names:
        try:
            return _trace(
                model, example_inputs, eval_mode, FakeTensorMode(allow_non_fake_inputs=True), {}
            )
        except _FAKE_LIMITS as e:  # values needed (e.g. .item() in forward): trace for real
            _log.debug(
                "fake-tensor trace of %s fell back to a real forward: %s: %s",
                type(model).__name__,
                type(e).__name__,
                first_line(e),
            )
    return _trace(model, example_inputs, eval_mode, None, kv_names)


def _meta_attention(model: nn.Module, mode: _TraceMode) -> contextlib.AbstractContextManager:
    """Fused attention for a model on the meta device; nothing otherwise (any function mode
    turns off ``nn.MultiheadAttention``'s fused fast path, which real traces must see)."""
    tensors = [*model.parameters(), *model.buffers()]
    if tensors and tensors[0].is_meta:
        return MetaAttention(mode.add_record)
    return contextlib.nullcontext()


def _trace(
    model: nn.Module, example_inputs: Any, eval_mode: bool, fake, kv_names: dict[int, str]
) -> Trace:
    args, kwargs = as_call(example_inputs)
    param_names: dict[int, str] = {}
    real_of: dict[int, torch.Tensor] = {}
    fakes: dict[str, torch.Tensor] = {}
    for pname, tensor in [*model.named_buffers(), *model.named_parameters()]:
        if fake is not None:  # the forward runs on fake twins of the weights
            fakes[pname] = fake.from_tensor(tensor)
            real_of.setdefault(storage_key(fakes[pname]), tensor)
        if tensor.numel():
            param_names.setdefault(storage_key(fakes.get(pname, tensor)), pname)
    modules: dict[str, ModuleInfo] = {}
    seen: set[int] = set()
    total_params = 0
    for mname, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        count = sum(p.numel() for p in own)
        total_params += count
        modules[mname] = ModuleInfo(type(module).__name__, count)

    was_training = model.training
    if eval_mode:
        model.eval()
    stack = _ModuleStack(model)
    mode = _TraceMode(param_names, stack, kv_names)
    mode.real_of = real_of
    start = time.perf_counter()
    try:
        if fake is None:
            with mode, _meta_attention(model, mode):
                model(*args, **kwargs)
        else:
            args, kwargs = tree_map_only(torch.Tensor, fake.from_tensor, (args, kwargs))
            with fake, mode:
                torch.func.functional_call(model, fakes, args, kwargs)
    finally:
        stack.remove()
        model.train(was_training)
    input_shapes = tuple(tuple(t.shape) for t in tensors_in((args, kwargs)))
    return Trace(
        records=tuple(mode.records),
        modules=modules,
        input_shapes=input_shapes,
        params=total_params,
        uncosted_ops=dict(mode.uncosted),
        wall_s=time.perf_counter() - start,
    )
