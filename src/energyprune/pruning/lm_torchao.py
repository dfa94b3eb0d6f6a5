"""Layers stored as int8 / int4 written as torchao tensors, so ``from_pretrained`` loads them
quantised.

A folder of uniform widths whose layers are stored in fewer bits (:mod:`.lm_bits`) holds those
layers' linear weights as torchao ``IntxUnpackedToInt8Tensor`` (one int8 per weight, one float32
scale per group of 32 inputs) under a ``TorchAoConfig`` (``IntxWeightOnlyConfig`` per layer,
through ``FqnToConfig``) in ``config.json``: transformers' torchao support loads them as such,
on CPU too. torchao would round with its own scales (``SYMMETRIC``: the group's largest |w|
over 7.5 or 127.5 steps), so the integers and scales in those tensors are replaced by the run's
own (llama.cpp's Q8_0 / Q4_0 grids): the loaded model computes the logits the run evaluated.
Our own loader (:func:`~energyprune.pruning.lm_export.load_lm`) turns them back into float
weights on the same grids, which is what pruning, pricing and training work on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from energyprune.energy.lm.serving import layer_bits_of
from energyprune.pruning.decoder import decoder_layers
from energyprune.pruning.lm_bits import stored_groups, stored_layers

__all__ = ["float_weights", "save_torchao"]

#: torchao's integer dtype of each weight format
_DTYPES = {"int8": torch.int8, "int4": torch.int4}


def _fqn_config(recorded, group: int):
    """torchao's per-layer config: each stored layer's projections as its weight format."""
    from torchao.quantization import FqnToConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    return FqnToConfig(
        {
            f"re:{prefix.replace('.', chr(92) + '.')}\\..*_proj": IntxWeightOnlyConfig(
                weight_dtype=_DTYPES[dtype],
                granularity=PerGroup(group),
                mapping_type=MappingType.SYMMETRIC,
            )
            for prefix, dtype in recorded
        }
    )


def save_torchao(model: nn.Module, out: Path) -> None:
    """Write ``model`` to ``out`` with its stored layers as torchao tensors holding the run's
    integers and scales (``model`` is left alone; its widths must be uniform)."""
    from energyprune.models.hf import require_transformers

    transformers = require_transformers()
    _, recorded = layer_bits_of(model.config)
    config = transformers.TorchAoConfig(quant_type=_fqn_config(recorded, stored_layers(model)[0]))
    with tempfile.TemporaryDirectory(dir=out) as floats:
        model.save_pretrained(floats)
        quantised = transformers.AutoModelForCausalLM.from_pretrained(
            floats, quantization_config=config
        )
        _set_ours(quantised, model)
        quantised.save_pretrained(out)


@torch.no_grad()
def _set_ours(quantised: nn.Module, model: nn.Module) -> None:
    """Put ``model``'s integers and scales into ``quantised``'s torchao weights."""
    ours, theirs = decoder_layers(model), decoder_layers(quantised)
    group, stored = stored_layers(model)
    for i, dtype in stored:
        for name, module in ours[i].named_modules():
            if isinstance(module, nn.Linear):
                weight = theirs[i].get_submodule(name).weight
                q, scale = stored_groups(module.weight, dtype, group)
                weight.qdata.copy_(q)
                weight.scale.copy_(scale.to(weight.scale.dtype))
                weight.zero_point.zero_()


@torch.no_grad()
def float_weights(model: nn.Module) -> None:
    """Turn torchao weights that ``from_pretrained`` loaded back into float parameters on the
    same grids, and drop the quantisation config; no-op otherwise."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or getattr(model.config, "quantization_config", None) is None:
        return
    if model.config.quantization_config.quant_method != "torchao":
        return
    for module in model.modules():
        if isinstance(module, nn.Linear) and type(module.weight.data) is not torch.Tensor:
            module.weight = nn.Parameter(module.weight.dequantize())
    quantizer.remove_quantization_config(model)
