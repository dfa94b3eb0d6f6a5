"""The KV cache's dtype as a cut: keys and values stored as int8 or int4.

At large batch and long context decode reads more KV cache than weights, so the cache's dtype is
the lever there (llama.cpp's ``--cache-type-k/-v q8_0|q4_0``, vLLM's ``--kv-cache-dtype``). One
dtype holds for the whole cache, as servers set it. The model rounds what it would store: a
forward hook on every attention's ``k_proj`` and ``v_proj`` rounds their outputs on llama.cpp's
Q8_0 / Q4_0 grids, one scale per :data:`~energyprune.pruning.lm_bits.GROUP` values of a head and
token (:func:`~energyprune.pruning.lm_bits.fake_quantise`). Keys are rounded **before RoPE**
(a server rounds them after it; the rotation mixes pairs within a head, so the error is alike,
not equal): perplexity is measured on rounded, dequantised K and V. Training passes gradients
straight through the rounding. The choice travels in the config (:data:`KV_KEY`), where
:func:`energyprune.profile_lm` reads it to price the cache at its stored bytes, and
:func:`round_kv` re-installs the hooks on a loaded model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from energyprune.energy.lm.serving import KV_KEY, kv_dtype_of
from energyprune.errors import ConfigError
from energyprune.pruning.decoder import attention_layers
from energyprune.pruning.lm_bits import GROUP, LAYER_BITS, fake_quantise

__all__ = ["KV_KINDS", "kv_roundable", "kv_sensitivity", "kv_twin", "round_kv"]

#: the KV-cache cuts, in order (int4 goes further than int8): kind -> stored dtype
KV_KINDS = {"kv-int8": "int8", "kv-int4": "int4"}


class _RoundKV:
    """A forward hook: the projection's output as the cache stores it (a plain object, so a
    deep copy of the model keeps it)."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def __call__(self, module: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
        if out.is_meta:
            return out  # a shapes-only twin being priced
        rounded = fake_quantise(out.reshape(-1, out.shape[-1]), self.dtype).view_as(out)
        return out + (rounded - out).detach()  # straight through, for recovery


def _projections(model: nn.Module) -> list[nn.Module]:
    return [p for a in attention_layers(model) for p in (a.module.k_proj, a.module.v_proj)]


def kv_roundable(model: nn.Module) -> bool:
    """Whether every head's K and V are whole groups of :data:`GROUP` values."""
    return all(a.head_dim % GROUP == 0 for a in attention_layers(model))


def round_kv(model: nn.Module, dtype: str | None = "recorded") -> None:
    """Round K and V as ``dtype`` stores them (None: not at all; ``"recorded"``: as the config
    records), replacing any rounding installed before, and record the choice in the config."""
    if dtype == "recorded":
        dtype = kv_dtype_of(model.config)
    if dtype is not None and dtype not in LAYER_BITS:
        raise ConfigError(f"KV cache dtype must be one of {', '.join(LAYER_BITS)}, got {dtype!r}")
    if dtype is not None and not kv_roundable(model):
        raise ConfigError(
            f"a KV cache stored as {dtype} needs heads of whole groups of {GROUP} values; this "
            "model's are not: leave the KV cache as it is"
        )
    for proj in _projections(model):
        for key, hook in list(proj._forward_hooks.items()):
            if isinstance(hook, _RoundKV):
                del proj._forward_hooks[key]
        if dtype:
            proj.register_forward_hook(_RoundKV(dtype))
    if dtype:
        setattr(model.config, KV_KEY, {"dtype": dtype})
    elif hasattr(model.config, KV_KEY):
        delattr(model.config, KV_KEY)


def kv_twin(model: nn.Module, dtype: str) -> nn.Module:
    """A shapes-only twin of ``model`` recorded as caching K and V in ``dtype`` (to price it
    so; ``model`` is left alone)."""
    from energyprune.models.hf import meta_twin

    twin = meta_twin(model)  # a deep copy: its config is its own
    setattr(twin.config, KV_KEY, {"dtype": dtype})
    return twin


@torch.no_grad()
def kv_sensitivity(model: nn.Module, loss: Callable[[nn.Module], float]) -> dict[str, float]:
    """Calibration-loss rise of caching K and V as each dtype (``model`` left as it was); inf
    where its heads cannot be rounded so."""
    if not kv_roundable(model):
        return dict.fromkeys(KV_KINDS, math.inf)
    before = kv_dtype_of(model.config)
    base = loss(model)
    rises = {}
    for kind, dtype in KV_KINDS.items():
        round_kv(model, dtype)
        rises[kind] = loss(model) - base
    round_kv(model, before)
    return rises
