"""Bits as a cut: a decoder layer's linear weights stored as int8 or int4, chosen per layer.

A layer quantised here is rounded as a weight-only serving kernel stores it: round-to-nearest
with one scale per group of :data:`GROUP` input weights on llama.cpp's Q8_0 / Q4_0 grids,
through torchao's affine quantisation primitives (``quantize_affine`` /
``dequantize_affine``). The model keeps the dequantised values in its own dtype, so perplexity
is measured on **dequantised weights**
(the rounding is the stored one; an int kernel computes the same products up to its
accumulation order). Recovery trains the stored model quantisation-aware (:func:`trained_on_grid`):
float master weights are updated, every forward uses their rounding (straight-through gradient),
and the last rounding is what is kept, so updates smaller than one grid step add up instead of
being rounded away after each step. Which layers hold which bits travels in the
model's config (:data:`~energyprune.energy.lm.serving.BITS_KEY`), and
:func:`energyprune.profile_lm` prices those layers at their stored bytes plus scales and a
dequantising op per weight (:class:`~energyprune.energy.lm.serving.Serving`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from energyprune.energy.lm.serving import BITS_KEY, layer_bits_of
from energyprune.errors import ConfigError
from energyprune.pruning.decoder import decoder_layers

__all__ = [
    "BITS_KINDS",
    "GROUP",
    "LAYER_BITS",
    "bits_sensitivity",
    "fake_quantise",
    "quantisable",
    "quantise_layers",
    "stored_groups",
    "stored_layers",
    "stored_twin",
    "trained_on_grid",
]

#: input weights per scale
GROUP = 32
#: the integer range of each weight format this module rounds to
LAYER_BITS = {"int8": (-128, 127), "int4": (-8, 7)}


def fake_quantise(weight: torch.Tensor, dtype: str, group: int = GROUP) -> torch.Tensor:
    """``weight`` rounded as ``dtype`` stores it, returned dequantised in the weight's dtype
    (:func:`stored_groups`' integers times their scales), so a GGUF export stores these values
    (up to its fp16 scales) and rounding twice is rounding once."""
    from torchao.quantization.quant_primitives import dequantize_affine

    q, scale = stored_groups(weight, dtype, group)
    lo, hi = LAYER_BITS[dtype]
    zero = torch.zeros_like(scale, dtype=torch.int32)
    out = dequantize_affine(
        q, (1, group), scale, zero, torch.int8, lo, hi, output_dtype=torch.float32
    )
    return out.to(weight.dtype)


def stored_groups(
    weight: torch.Tensor, dtype: str, group: int = GROUP
) -> tuple[torch.Tensor, torch.Tensor]:
    """The integers (int8, one per weight) and float32 scales (one per ``group`` inputs of a
    row) that ``dtype`` stores ``weight`` as, on llama.cpp's grids: Q8_0's step is the group's
    largest |w| over 127; Q4_0's largest |w|, its sign kept, is exactly -8 steps."""
    from torchao.quantization.quant_primitives import quantize_affine

    if dtype not in LAYER_BITS:
        raise ConfigError(f"layer bits must be one of {', '.join(LAYER_BITS)}, got {dtype!r}")
    if weight.dim() != 2 or weight.shape[1] % group:
        raise ConfigError(
            f"a weight of shape {tuple(weight.shape)} has rows that are not whole groups of "
            f"{group}: it cannot be quantised per group"
        )
    lo, hi = LAYER_BITS[dtype]
    w = weight.detach().float()
    groups = w.view(w.shape[0], -1, group)
    if dtype == "int4":  # llama.cpp's Q4_0: the largest |w|, sign kept, is exactly -8 steps
        peak = groups.gather(2, groups.abs().argmax(dim=2, keepdim=True)).squeeze(2)
        scale = peak / lo
    else:  # Q8_0: the largest |w| is 127 steps
        scale = groups.abs().amax(dim=2) / hi
    tiny = torch.finfo(torch.float32).tiny
    scale = torch.where(scale.abs() < tiny, torch.full_like(scale, tiny), scale)
    zero = torch.zeros_like(scale, dtype=torch.int32)  # symmetric
    q = quantize_affine(w, (1, group), scale, zero, torch.int8, quant_min=lo, quant_max=hi)
    return q, scale


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
    _record(model.config, dict(recorded) | {f"model.layers.{i}": d for i, d in bits.items()}, group)


#: the bit cuts a layer can take, in order (int4 goes further than int8)
BITS_KINDS = ("int8", "int4")


def _linears(layer: nn.Module) -> list[nn.Linear]:
    return [m for m in layer.modules() if isinstance(m, nn.Linear)]


def quantisable(layer: nn.Module, group: int = GROUP) -> bool:
    """Whether every linear weight of ``layer`` has rows of whole groups."""
    return all(m.in_features % group == 0 for m in _linears(layer))


@torch.no_grad()
def bits_sensitivity(
    model: nn.Module, loss: Callable[[nn.Module], float], on_probe=None
) -> dict[str, list[float]]:
    """Calibration-loss rise of storing each decoder layer alone as int8 and as int4
    (``model``'s weights are restored after each probe); inf where it cannot be stored so."""
    base = loss(model)
    layers = decoder_layers(model)
    found: dict[str, list[float]] = {dtype: [] for dtype in BITS_KINDS}
    for i, layer in enumerate(layers):
        linears = _linears(layer)
        kept = [m.weight.detach().clone() for m in linears]
        for dtype in BITS_KINDS:
            if not quantisable(layer):
                found[dtype].append(math.inf)
                continue
            for m in linears:
                m.weight.copy_(fake_quantise(m.weight, dtype))
            found[dtype].append(loss(model) - base)
            for m, w in zip(linears, kept, strict=True):
                m.weight.copy_(w)
        if on_probe:
            on_probe(i + 1, len(layers))
    return found


def stored_twin(model: nn.Module, dtype: str) -> nn.Module:
    """A shapes-only twin of ``model`` whose every decoder layer is recorded as stored in
    ``dtype`` (to price it so; ``model`` is left alone)."""
    from energyprune.models.hf import meta_twin

    twin = meta_twin(model)
    layers = {f"model.layers.{i}": dtype for i in range(len(decoder_layers(model)))}
    _record(twin.config, layers, GROUP)
    return twin


def stored_layers(model: nn.Module) -> tuple[int, list[tuple[int, str]]]:
    """The group size and each (decoder layer index, weight format) the config records."""
    group, recorded = layer_bits_of(model.config)
    return group or GROUP, [(int(prefix.rsplit(".", 1)[1]), dtype) for prefix, dtype in recorded]


def _record(config, layers: Mapping[str, str], group: int) -> None:
    """Write which layers are stored how into ``config`` (what pricing reads)."""
    setattr(config, BITS_KEY, {"group_size": group, "layers": dict(layers)})


class _OnGrid(nn.Module):
    """A weight's parametrisation: its stored rounding forward, the identity backward."""

    def __init__(self, dtype: str, group: int) -> None:
        super().__init__()
        self.dtype, self.group = dtype, group

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (fake_quantise(weight, self.dtype, self.group) - weight).detach()


@contextmanager
def trained_on_grid(model: nn.Module) -> Iterator[bool]:
    """Train ``model``'s stored layers quantisation-aware inside the block (yields whether any
    are): their linear weights become float masters whose rounding every forward uses, with a
    straight-through gradient. On leaving, each weight is its masters' rounding again (on its
    grid). Build the optimiser inside the block: the masters are new parameters."""
    from torch.nn.utils import parametrize

    group, stored = stored_layers(model)
    layers = decoder_layers(model)
    linears = [(m, dtype) for i, dtype in stored for m in _linears(layers[i])]
    for m, dtype in linears:
        parametrize.register_parametrization(m, "weight", _OnGrid(dtype, group))
    try:
        yield bool(linears)
    finally:
        for m, _ in linears:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
