"""Energy per token of a decoder-only language model in a stated serving regime (an estimate).

:func:`profile_lm` builds each forward pass of the regime (:mod:`energyprune.energy.lm.regimes`)
with a real static cache (:mod:`energyprune.models.hf`), traces the model's own code on the
meta device, prices it under a hardware profile, and divides by the tokens the regime counts.
Cache traffic is its own category: the tracer tags the cache's memory, so KV bytes are what
the model's attention reads and writes, not a formula of ours.

Mixture-of-experts rule: compute is the active experts' (top-k per token, as routed); weight
bytes are the experts a step is expected to touch, :func:`~energyprune.energy.lm.regimes.
touched_experts` = E (1 - (1 - k/E)^T) for T tokens in the step, of the whole expert stack the
grouped kernel is handed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.energy.lm.expert_parallel import all_to_all, expert_shard, per_gpu_regime
from energyprune.energy.lm.graphs import GRAPHS, RUNTIMES, graph_ops
from energyprune.energy.lm.layer_split import LayerSplit, split
from energyprune.energy.lm.regimes import Decode, Prefill, Regime, Workload, touched_experts
from energyprune.energy.lm.result import LMPass, LMProfile
from energyprune.energy.lm.serving import Serving, kv_dtype_of, layer_bits_of, quantised
from energyprune.energy.lm.tensor_parallel import one_gpu, over_gpus
from energyprune.energy.pricing.estimates import (
    EnergyProfile,
    Totals,
    estimate,
    layer_totals,
    with_forward,
)
from energyprune.energy.pricing.features import itemsize
from energyprune.energy.tracing.tracer import Trace, trace
from energyprune.errors import ConfigError
from energyprune.options import build

__all__ = [
    "LMPass",
    "LMProfile",
    "LayerSplit",
    "TracedPass",
    "as_meta_model",
    "lm_traces",
    "nm_weights",
    "profile_lm",
    "served",
]


def _touched(tr: Trace, experts: int, top_k: int, tokens: int) -> Trace:
    """The trace with each grouped expert matmul reading only the experts its tokens touch."""
    share = touched_experts(experts, top_k, tokens) / experts
    records = []
    for r in tr.records:
        if r.op.startswith("aten._grouped_mm"):
            ops = tuple(
                dataclasses.replace(o, numel=round(o.numel * share)) if o.role == "param" else o
                for o in r.operands
            )
            r = dataclasses.replace(r, operands=ops)
        records.append(r)
    return dataclasses.replace(tr, records=tuple(records))


def nm_weights(model: nn.Module, patterns: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Linear weights of ``model`` that are N:M sparse in one of ``patterns`` (``"2:4"``)."""
    found: dict[str, tuple[int, int]] = {}
    pairs = [tuple(int(x) for x in p.split(":")) for p in patterns]
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, nn.Linear) or weight is None or weight.is_meta:
            continue
        for n, m in pairs:
            if weight.dim() == 2 and not weight.shape[1] % m:
                groups = (weight.detach().view(weight.shape[0], -1, m) != 0).sum(dim=2)
                if bool((groups <= n).all()):
                    found[f"{name}.weight"] = (n, m)
                    break
    return found


def _sparse_kernels(tr: Trace, sparse: dict[str, tuple[int, int]]) -> Trace:
    """Ops against N:M-sparse weights as the runtime's N:M kernels run them: n/m of the MACs,
    and n/m of the weight bytes plus the index metadata (log2(m) bits per kept value)."""

    records = []
    for r in tr.records:
        hits = [o for o in r.operands if o.role == "param" and o.name in sparse]
        if hits:
            n, m = sparse[hits[0].name]
            ops = tuple(
                dataclasses.replace(
                    o, numel=round(o.numel * n / m * (1 + math.log2(m) / (8 * itemsize(o.dtype))))
                )
                if o in hits
                else o
                for o in r.operands
            )
            r = dataclasses.replace(r, operands=ops, macs=r.macs * n // m)
        records.append(r)
    return dataclasses.replace(tr, records=tuple(records))


def _as_model(model_or_config: Any) -> tuple[nn.Module, str]:
    from energyprune.models import hf

    if isinstance(model_or_config, nn.Module):
        if not hasattr(model_or_config, "config"):
            raise ConfigError(
                f"profile_lm prices Hugging Face causal LMs; {type(model_or_config).__name__} "
                "has no .config: use energyprune.profile for other models"
            )
        return hf.meta_twin(model_or_config), type(model_or_config).__name__
    if isinstance(model_or_config, (str, os.PathLike)):
        spec = str(model_or_config)
        spec = spec if hf.is_hf_spec(spec) else hf.HF_PREFIX + spec
        return hf.build_hf(hf.read_hf_config(spec)), spec
    return hf.build_hf(model_or_config), type(model_or_config).__name__.removesuffix("Config")


@dataclass(frozen=True)
class TracedPass:
    """One forward pass of a regime, traced (MoE rule applied); ``share`` = count / tokens,
    the weight of its cost in one token's."""

    phase: str
    batch: int
    length: int
    count: float
    share: float
    trace: Trace


def lm_traces(model: nn.Module, regime: Regime) -> list[TracedPass]:
    """Trace every pass of ``regime`` on ``model`` (a meta-device LM): what pricing and
    calibration share."""
    from energyprune.models import hf

    _STEPS = {"prefill": hf.prefill_step, "decode": hf.decode_step}
    if not isinstance(regime, (Prefill, Decode, Workload)):
        raise ConfigError(f"regime must be Prefill, Decode or Workload, got {regime!r}")
    moe = hf.moe_experts(model.config)
    out = []
    for p in regime.passes(hf.sliding_windows(model)):
        step = _STEPS[p.phase](model, p.batch, p.length)
        tr = trace(model, step.inputs, kv_cache=step.kv_cache)
        if moe:
            tr = _touched(tr, *moe, tokens=step.tokens)
        out.append(TracedPass(p.phase, p.batch, p.length, p.count, p.count / regime.tokens, tr))
    return out


def _as_graphs(prof: EnergyProfile, tr: Trace, hw: HardwareProfile, dtype) -> EnergyProfile:
    """One pass priced eagerly, re-priced as a serving stack's fused kernels run it."""
    ops = graph_ops(prof.ops, tr, hw, dtype)
    total = with_forward(Totals.of(ops, tr.params), hw)
    return dataclasses.replace(prof, ops=ops, total=total, layers=layer_totals(tr, ops))


def served(model: nn.Module, regime: Regime, stored: Serving, from_config: bool = True):
    """The model one GPU runs and the share of the regime it serves (the whole regime under
    tensor parallelism; 1/N of the requests under expert parallelism)."""
    if stored.tensor_parallel > 1:
        return one_gpu(model, stored.tensor_parallel, from_config), regime
    if stored.expert_parallel > 1:
        n = stored.expert_parallel
        return expert_shard(model, n, from_config), per_gpu_regime(regime, n)
    return model, regime


def _served_layers(layers, model, traced, hw: HardwareProfile, priced: str, stored: Serving):
    """One GPU's rows as the served model pays them: over tensor-parallel GPUs, with the
    collectives, and the host's time between graph replays."""
    if stored.tensor_parallel > 1:
        layers = over_gpus(layers, model, traced, hw, priced, stored.tensor_parallel)
    if stored.expert_parallel > 1:
        comm = all_to_all(hw, stored.expert_parallel, traced, model.config, itemsize(priced))
        layers = _system_seconds((*layers, comm), stored.expert_parallel)
    if stored.runtime == GRAPHS:
        step = _step_overhead(hw, traced, stored.tensor_parallel)
        layers = (*layers, *_system_seconds(step, stored.expert_parallel))
    return layers


def _system_seconds(layers, n: int) -> tuple[LayerSplit, ...]:
    """Seconds per token of the whole system: n GPUs each serve 1/n of the tokens at once (one
    GPU's seconds per token of its own batch / n); energy stays summed over them."""
    return tuple(dataclasses.replace(layer, seconds=layer.seconds / n) for layer in layers)


def _step_overhead(hw: HardwareProfile, traced: list[TracedPass], gpus: int) -> tuple:
    """The host's time between two graph replays (scheduling, sampling: the profile's
    ``runtime.graph_step_s``) in every pass, at idle power on every GPU; none when it is 0."""
    seconds = sum(t.share for t in traced) * hw.runtime.graph_step_s
    if not seconds:
        return ()
    return (
        LayerSplit("(per step)", "Runtime", static_j=gpus * hw.static_w * seconds, seconds=seconds),
    )


def _as_stored(model_or_config: Any, stored: Serving) -> Serving:
    """``stored``, with the per-layer bits and KV-cache dtype a model quantised by a plan
    records in its config (unless the caller chose them)."""
    if not isinstance(model_or_config, nn.Module):
        return stored
    config = model_or_config.config
    kv = stored.kv_dtype or kv_dtype_of(config)
    if kv != stored.kv_dtype:
        stored = dataclasses.replace(stored, kv_dtype=kv)
    group, layers = layer_bits_of(config)
    if not layers or stored.layer_weights:
        return stored
    group = stored.group_size or group
    return dataclasses.replace(stored, layer_weights=layers, group_size=group)


def _calibration(hw: HardwareProfile) -> str:
    """Whether the profile was fitted to measurements, and to which."""
    fit = hw.calibration
    if not fit:
        return "uncalibrated"
    return f"calibrated on {fit.get('device', 'a device')} ({fit.get('n_train', '?')} rows)"


def _moe_info(moe: tuple[int, int] | None) -> dict[str, Any] | None:
    """How a mixture of experts was priced (None for a dense model)."""
    if not moe:
        return None
    return {
        "experts": moe[0],
        "top_k": moe[1],
        "rule": "compute: top-k active experts "
        "per token; weight bytes: E(1-(1-k/E)^T) experts touched by T tokens",
    }


def as_meta_model(model_or_config: Any) -> tuple[nn.Module, str]:
    """The meta-device LM of a model, a config or an ``hf:`` spec, and its default name."""
    return _as_model(model_or_config)


def profile_lm(
    model_or_config: Any,
    regime: Regime,
    hardware: str | os.PathLike[str] | HardwareProfile = "horowitz-45nm",
    dtype: str | None = None,
    *,
    name: str | None = None,
    serving: Serving | None = None,
    **settings: Any,
) -> LMProfile:
    """Estimate a language model's energy per token in ``regime`` (an estimate, never a
    measurement). Weights are priced dense (zeros are multiplied and moved like any weight),
    except N:M-sparse ones under a profile whose ``sparse_kernels`` list their pattern.

    Args:
        model_or_config: a Hugging Face causal LM (priced by shape: its weights are not
            used), a ``PretrainedConfig``, or an ``hf:`` spec / path to a ``config.json``.
        regime: :class:`Prefill`, :class:`Decode` or :class:`Workload`.
        hardware: profile name, YAML path or :class:`HardwareProfile`; profiles with rates
            (``h100-sxm``) also give time per token and static energy.
        dtype: price floating tensors as this dtype (default: the model's).
        serving / settings: how the server stores weights and the KV cache
            (:class:`~energyprune.energy.lm.serving.Serving`: ``weights_dtype``,
            ``group_size``, ``kv_dtype``, ``layer_weights``...), given whole or as keywords.
            A model quantised layer by layer (its config records ``energyprune_weight_bits``)
            is priced as stored unless ``layer_weights`` is given.
    """
    stored = build(Serving, serving, **settings) if settings else serving or Serving()
    stored = _as_stored(model_or_config, stored)
    start = time.perf_counter()
    hw = load_hardware(hardware)
    sparse = {}  # weights the runtime's N:M kernels run sparse (read before the meta twin)
    if hw.sparse_kernels and isinstance(model_or_config, nn.Module):
        sparse = nm_weights(model_or_config, hw.sparse_kernels)
    model, default_name = _as_model(model_or_config)
    whole = model.config
    model, per_gpu = served(model, regime, stored, not isinstance(model_or_config, nn.Module))
    from energyprune.models.hf import moe_experts

    moe = moe_experts(whole)
    passes, weighted, uncosted = [], [], {}
    traced_passes = lm_traces(model, per_gpu)
    for traced in traced_passes:
        tr = _sparse_kernels(traced.trace, sparse) if sparse else traced.trace
        tr = quantised(tr, stored, dtype) if stored != Serving() else tr
        prof = estimate(tr, hw, dtype, model_name=name or default_name)
        if stored.runtime == GRAPHS:
            prof = _as_graphs(prof, tr, hw, dtype)
        passes.append(LMPass(traced.phase, traced.batch, traced.length, traced.count, prof))
        weighted += [(op, traced.share) for op in prof.ops]
        for op, n in prof.uncosted_ops.items():
            uncosted[op] = uncosted.get(op, 0) + n
    tr = traced.trace
    types = {m: info.type for m, info in tr.modules.items()} | {"(root)": type(model).__name__}
    layers = split(weighted, hw, dtype, types)
    layers = _served_layers(layers, model, traced_passes, hw, passes[0].profile.dtype, stored)
    return LMProfile(
        model=name or default_name,
        hardware=hw.name,
        hardware_source=hw.path,
        dtype=passes[0].profile.dtype,
        regime=regime,
        energy_j=sum(layer.energy_j for layer in layers),
        seconds=sum(layer.seconds for layer in layers),
        layers=layers,
        passes=tuple(passes),
        moe=_moe_info(moe),
        serving=stored,
        calibration=_calibration(hw),
        runtime=RUNTIMES[stored.runtime],
        busy_share=hw.active_w / (hw.static_w + hw.active_w) if hw.static_w + hw.active_w else 0.0,
        uncosted_ops=uncosted,
        wall_s=time.perf_counter() - start,
    )
