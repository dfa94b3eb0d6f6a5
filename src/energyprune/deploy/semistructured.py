"""2:4 semi-structured sparse kernels, used only where a measurement shows they are faster:
eager 2:4 on an H100 ViT ran 4.4x slower (shared/ANCHORS.md)."""

from __future__ import annotations

import time

import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.layers import make_permanent

__all__ = ["semi_structured_if_faster"]


def semi_structured_if_faster(
    model: nn.Module, example: torch.Tensor, device: str = "cuda", repeats: int = 50
) -> tuple[nn.Module, dict[str, float]]:
    """Convert 2:4-masked Linear weights to semi-structured sparse tensors only if a latency
    measurement on ``device`` shows the converted model is faster; else keep it dense."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ConfigError("semi-structured 2:4 kernels need an NVIDIA GPU (--device cuda)")
    from torch.sparse import to_sparse_semi_structured

    def latency(m: nn.Module) -> float:
        with torch.no_grad():
            for _ in range(5):
                m(example)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                m(example)
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats

    make_permanent(model)
    dense_s = latency(model)
    converted = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            converted[name] = module.weight
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()))
    sparse_s = latency(model)
    if sparse_s >= dense_s:
        for name, weight in converted.items():
            model.get_submodule(name).weight = weight
    return model, {
        "dense_s": dense_s,
        "semi_structured_s": sparse_s,
        "converted": float(sparse_s < dense_s),
    }
