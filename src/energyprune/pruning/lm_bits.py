"""Bits as a cut: a decoder layer's linear weights stored as int8 or int4, chosen per layer.

A layer quantised here is rounded as a weight-only serving kernel stores it: round-to-nearest
with one symmetric scale per group of :data:`GROUP` input weights, computed by torchao's affine
quantisation primitives (``choose_qparams_affine`` / ``quantize_affine`` /
``dequantize_affine``). The model keeps the dequantised values in its own dtype, so perplexity
is measured on **dequantised weights** (the rounding is the stored one; an int kernel computes
the same products up to its accumulation order). Which layers hold which bits travels in the
model's config (:data:`~energyprune.energy.lm.serving.BITS_KEY`), and
:func:`energyprune.profile_lm` prices those layers at their stored bytes plus scales and a
dequantising op per weight (:class:`~energyprune.energy.lm.serving.Serving`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from energyprune.energy.lm.serving import BITS_KEY, layer_bits_of
from energyprune.errors import ConfigError
from energyprune.pruning.decoder import decoder_layers

__all__ = ["GROUP", "LAYER_BITS", "fake_quantise", "quantise_layers"]

#: input weights per scale
GROUP = 32
#: the integer range of each weight format this module rounds to
LAYER_BITS = {"int8": (-128, 127), "int4": (-8, 7)}


def fake_quantise(weight: torch.Tensor, dtype: str, group: int = GROUP) -> torch.Tensor:
    """``weight`` rounded as ``dtype`` stores it (symmetric, one scale per ``group`` inputs of a
    row), returned dequantised in the weight's dtype."""
    from torchao.quantization.quant_primitives import (
        MappingType,
        choose_qparams_affine,
        dequantize_affine,
        quantize_affine,
    )

    if dtype not in LAYER_BITS:
        raise ConfigError(f"layer bits must be one of {', '.join(LAYER_BITS)}, got {dtype!r}")
    if weight.dim() != 2 or weight.shape[1] % group:
        raise ConfigError(
            f"a weight of shape {tuple(weight.shape)} has rows that are not whole groups of "
            f"{group}: it cannot be quantised per group"
        )
    lo, hi = LAYER_BITS[dtype]
    w = weight.detach().float()
    block = (1, group)
    scale, zero = choose_qparams_affine(
        w, MappingType.SYMMETRIC, block, torch.int8, quant_min=lo, quant_max=hi
    )
    q = quantize_affine(w, block, scale, zero, torch.int8, quant_min=lo, quant_max=hi)
    out = dequantize_affine(q, block, scale, zero, torch.int8, lo, hi, output_dtype=torch.float32)
    return out.to(weight.dtype)


@torch.no_grad()
def quantise_layers(model: nn.Module, bits: Mapping[int, str], group: int = GROUP) -> None:
    """Round every linear weight of each decoder layer ``i`` in ``bits`` as ``bits[i]`` stores
    it, in place, and record the choice in the config so pricing reads it."""
    layers = decoder_layers(model)
    for i, dtype in bits.items():
        if not 0 <= i < len(layers):
            raise ConfigError(f"layer {i} does not exist: the model has {len(layers)} layers")
        for module in layers[i].modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(fake_quantise(module.weight, dtype, group))
    _, recorded = layer_bits_of(model.config)
    layers = dict(recorded) | {f"model.layers.{i}": dtype for i, dtype in bits.items()}
    setattr(model.config, BITS_KEY, {"group_size": group, "layers": layers})
