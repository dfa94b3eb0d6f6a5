"""Layer helpers every layer above needs: masks folded into weights (a model as deployed),
and the widths of its conv / linear layers."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

__all__ = ["TORCH_DTYPES", "folded_copy", "layer_widths", "make_permanent"]

#: floating dtypes a model can be cast to, by short name
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def folded_copy(model: nn.Module) -> nn.Module:
    """A deep copy with ``torch.nn.utils.prune`` masks folded into the weights."""
    for m in model.modules():
        if hasattr(m, "weight_orig"):  # the recomputed weight is not a leaf; deepcopy needs one
            m.weight = m.weight.detach()
    return make_permanent(copy.deepcopy(model))


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold ``torch.nn.utils.prune`` masks into the weights (for export and saving)."""
    for module in model.modules():
        for attr in [
            k[: -len("_orig")]
            for k, _ in module.named_parameters(recurse=False)
            if k.endswith("_orig")
        ]:
            torch_prune.remove(module, attr)
    return model


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """``[in, out]`` channels of every conv and linear layer, by module name."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = [module.in_channels, module.out_channels]
        elif isinstance(module, nn.Linear):
            widths[name] = [module.in_features, module.out_features]
    return widths
