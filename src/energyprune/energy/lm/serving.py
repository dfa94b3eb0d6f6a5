"""How a server stores what decode reads: quantised weights and a quantised KV cache.

Decode is bound by the bytes it reads: the weights at small batch, the KV cache at large batch
and long context. Weight-only quantisation (AWQ/GPTQ-style int4 with a bf16 scale per group of
``group_size`` input weights, or int8 / fp8 with one scale per output channel) and a
quantised KV cache cut those bytes 2-4x, and add the work of dequantising each weight as the
kernel reads it. The decoder's linear layers are quantised; the embedding and the LM head stay
in the model's dtype, as AWQ and GPTQ checkpoints keep them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from energyprune.energy.lm.graphs import GRAPHS, RUNTIMES
from energyprune.energy.pricing.features import itemsize, price_dtype
from energyprune.energy.tracing.tracer import Trace
from energyprune.errors import ConfigError

__all__ = ["BITS", "BITS_KEY", "KV_KEY", "Serving", "kv_dtype_of", "layer_bits_of", "quantised"]

#: bits per stored value of each quantised format
BITS = {"int8": 8, "fp8": 8, "int4": 4}
SCALE_BYTES = 2  # one bf16 scale per group (or per output channel)
UNQUANTISED = ("lm_head", "embed_tokens")
#: the config field a model quantised layer by layer records its storage in:
#: {"group_size": G, "layers": {"model.layers.3": "int4", ...}}
BITS_KEY = "energyprune_weight_bits"
#: the config field a model whose KV cache is stored quantised records it in: {"dtype": "int8"}
KV_KEY = "energyprune_kv_cache"


@dataclass(frozen=True)
class Serving:
    """What a serving stack stores: the decoder's linear weights as ``weights_dtype`` (None: as
    the model is) with one scale per ``group_size`` input weights (None: per output channel),
    and the KV cache as ``kv_dtype`` (one scale per head and token), over ``tensor_parallel``
    GPUs (:mod:`energyprune.energy.lm.tensor_parallel`) or its experts over ``expert_parallel``
    GPUs (:mod:`energyprune.energy.lm.expert_parallel`), its kernels run as ``runtime``
    (:mod:`energyprune.energy.lm.graphs`: ``graphs``, a serving stack's fused kernels, or
    ``eager``, one kernel per aten op)."""

    weights_dtype: str | None = None
    group_size: int | None = None
    kv_dtype: str | None = None
    tensor_parallel: int = 1
    runtime: str = GRAPHS
    expert_parallel: int = 1
    #: per-layer storage that overrides ``weights_dtype``: (module prefix, dtype) pairs, e.g.
    #: (("model.layers.0", "int8"), ("model.layers.5", "int4")): bits chosen layer by layer
    layer_weights: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for prefix, value in self.layer_weights:
            if value not in BITS:
                raise ConfigError(
                    f"layer_weights: {prefix} must be stored as one of {', '.join(BITS)}, "
                    f"got {value!r}"
                )
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}"
            )
        for flag, value in (("--weights-dtype", self.weights_dtype), ("--kv-dtype", self.kv_dtype)):
            if value is not None and value not in BITS:
                raise ConfigError(f"{flag} must be one of {', '.join(BITS)}, got {value!r}")
        for flag, n in (
            ("--tensor-parallel", self.tensor_parallel),
            ("--expert-parallel", self.expert_parallel),
        ):
            if not isinstance(n, int) or n < 1:
                raise ConfigError(f"{flag} must be >= 1, got {n!r}")
        if self.tensor_parallel > 1 and self.expert_parallel > 1:
            raise ConfigError(
                "--tensor-parallel with --expert-parallel is not priced yet: pick one"
            )
        quantised = self.weights_dtype is not None or self.layer_weights
        if self.group_size is not None and (self.group_size < 1 or not quantised):
            raise ConfigError(
                f"--group-size {self.group_size} needs --weights-dtype and must be >= 1"
            )

    def stored_as(self, module: str) -> str | None:
        """How the weights of ``module`` (a decoder linear) are stored: its layer's choice (the
        longest matching prefix), else ``weights_dtype``."""
        hits = [(p, d) for p, d in self.layer_weights if module == p or module.startswith(p + ".")]
        return max(hits, key=lambda hit: len(hit[0]))[1] if hits else self.weights_dtype

    def weight_bytes(self, in_features: int, dtype: str | None = None) -> float:
        """Bytes one stored weight costs, its share of the scales included."""
        group = self.group_size or in_features
        return BITS[str(dtype or self.weights_dtype)] / 8 + SCALE_BYTES / group

    def describe(self) -> str:
        """One phrase: what is stored how (for the printed summary and the JSON)."""
        parts = []
        group = f"group {self.group_size}" if self.group_size else "per channel"
        if self.weights_dtype:
            parts.append(f"{self.weights_dtype} weights ({group})")
        if self.layer_weights:
            chosen = ", ".join(f"{p}: {d}" for p, d in self.layer_weights)
            parts.append(f"weights per layer ({group}): {chosen}")
        if self.kv_dtype:
            parts.append(f"{self.kv_dtype} KV cache")
        if self.tensor_parallel > 1:
            parts.append(f"tensor parallel over {self.tensor_parallel} GPUs")
        if self.expert_parallel > 1:
            parts.append(f"expert parallel over {self.expert_parallel} GPUs")
        return ", ".join(parts) or "weights and KV cache as the model stores them, one GPU"


def layer_bits_of(config) -> tuple[int | None, tuple[tuple[str, str], ...]]:
    """The group size and (layer prefix, dtype) pairs a model's config records (none: as the
    model is): a model quantised layer by layer is priced as it is stored."""
    value = getattr(config, BITS_KEY, None)
    if not isinstance(value, dict):
        return None, ()
    layers = value.get("layers") or {}
    return value.get("group_size"), tuple(sorted((str(k), str(v)) for k, v in layers.items()))


def kv_dtype_of(config) -> str | None:
    """The KV-cache dtype a model's config records (None: as the model computes it)."""
    value = getattr(config, KV_KEY, None)
    dtype = value.get("dtype") if isinstance(value, dict) else None
    return str(dtype) if dtype else None


def _decoder_linear(tr: Trace, module: str) -> bool:
    info = tr.modules.get(module)
    return info is not None and info.type == "Linear" and not module.endswith(UNQUANTISED)


def quantised(tr: Trace, serving: Serving, dtype: str | None) -> Trace:
    """``tr`` as ``serving`` stores it: each quantised tensor's elements rescaled so that, priced
    in its traced dtype, they cost the stored bytes; a dequantising multiply per weight read."""
    records = []
    for r in tr.records:
        ops, extra = [], 0
        for o in r.operands:
            priced = itemsize(price_dtype(o.dtype, dtype))
            quantise = o.role == "param" and str(o.name).endswith(".weight")
            bits = serving.stored_as(r.module) if quantise else None
            if bits and _decoder_linear(tr, r.module):
                # the weight is the last argument, transposed: (in_features, out_features)
                in_features = r.input_shapes[-1][0] if r.input_shapes else 1
                stored = o.numel * serving.weight_bytes(in_features, bits)
                o, extra = dataclasses.replace(o, numel=round(stored / priced)), extra + o.numel
            elif serving.kv_dtype and o.role == "kv":
                stored = o.numel * BITS[serving.kv_dtype] / 8
                o = dataclasses.replace(o, numel=round(stored / priced))
            ops.append(o)
        records.append(dataclasses.replace(r, operands=tuple(ops), ops=r.ops + extra))
    return dataclasses.replace(tr, records=tuple(records))
