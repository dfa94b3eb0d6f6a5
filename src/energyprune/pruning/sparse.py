"""Unstructured (magnitude threshold) and N:M sparsity as ``torch.nn.utils.prune`` masks.

Zeros save energy only on hardware that skips them (a profile with ``zero_skipping: true``,
e.g. ``eyeriss-65nm``); under a dense profile these granularities cannot meet an energy target
and say so. On GPUs, 2:4 sparsity is converted to ``torch.sparse.to_sparse_semi_structured``
only behind a measurement showing it is faster (``deploy.semistructured``): eager 2:4
on an H100 ViT ran 4.4x slower (shared/ANCHORS.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.estimates import EnergyProfile, profile
from energyprune.errors import ConfigError

__all__ = [
    "Sparsity",
    "nm_mask",
    "sparsify",
]

_SEARCH_STEPS = 24


def _prunable(model: nn.Module, ignored: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and all(m is not i for i in ignored)
    ]


def _weight(module: nn.Module) -> torch.Tensor:
    return getattr(module, "weight_orig", module.weight).detach()


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest magnitudes in every ``m`` consecutive weights along the reduction
    (input-channel) dimension; conv weights are grouped over input channels per kernel tap."""
    w = weight.abs()
    moved = w.movedim(1, -1) if w.dim() > 2 else w  # (out, kh, kw, in): groups along in
    if moved.shape[-1] % m:
        raise ConfigError(f"reduction dimension {moved.shape[-1]} is not a multiple of M={m}")
    groups = moved.reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    keep = keep.reshape(moved.shape)
    return (keep.movedim(-1, 1) if w.dim() > 2 else keep).to(weight.dtype)


#: fake-tensor bookkeeping per traced op (s, on a 2-core CPU): a real forward slower than this
#: per op is traced on fake tensors instead
FAKE_OP_S = 6e-4


def shapes_pay(prof: EnergyProfile) -> bool:
    """Whether tracing on fake tensors beats a real forward, judged from a real trace."""
    return prof.wall_s > FAKE_OP_S * len(prof.ops)


def _apply(
    modules: list[tuple[str, nn.Module]],
    masks: dict[str, torch.Tensor],
    originals: dict[str, torch.Tensor],
) -> None:
    """Replace each module's mask by ``masks[name]`` (none if absent) over the original weights."""
    for name, module in modules:
        if hasattr(module, "weight_orig"):
            torch_prune.remove(module, "weight")  # folds the old mask in: restore the weights
            with torch.no_grad():
                module.weight.copy_(originals[name])
        if name in masks:
            torch_prune.custom_from_mask(module, "weight", masks[name])


def _digest(masks: dict[str, torch.Tensor], pattern: str) -> dict[str, dict[str, Any]]:
    return {
        f"{name}.weight": {
            "sparsity": float(1 - mask.float().mean()),
            "pattern": pattern,
            "sha256": hashlib.sha256(mask.bool().cpu().numpy().tobytes()).hexdigest(),
        }
        for name, mask in masks.items()
    }


def _threshold_masks(modules, sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Masks zeroing weights with |w| < ε, ε the ``sparsity`` quantile (global or per layer)."""
    if scope == "global":
        flat = torch.cat([_weight(m).abs().flatten() for _, m in modules])
        k = round(sparsity * flat.numel())
        eps = flat.kthvalue(k).values if k > 0 else flat.new_tensor(-1.0)
        return {n: (_weight(m).abs() > eps).float() for n, m in modules}
    masks = {}
    for name, m in modules:
        w = _weight(m).abs().flatten()
        k = round(sparsity * w.numel())
        eps = w.kthvalue(k).values if k > 0 else w.new_tensor(-1.0)
        masks[name] = (_weight(m).abs() > eps).float()
    return masks


@dataclass(frozen=True)
class Sparsity:
    """How to mask: ``granularity`` (``unstructured`` or ``nm``), N:M's (N, M), the largest
    share of any layer masked, the threshold's scope (``global`` or per ``layer``), and how
    the model is priced (its dtype and its name in the profile)."""

    granularity: str = "unstructured"
    nm: tuple[int, int] = (2, 4)
    max_ratio: float = 0.9
    scope: str = "global"
    dtype: str | None = None
    name: str = "model"


def sparsify(
    model: nn.Module,
    example: Any,
    hw: HardwareProfile,
    target_j: float,
    ignored: list[nn.Module],
    how: Sparsity,
) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Mask ``model`` in place until its estimate on ``hw`` is <= ``target_j``.

    Returns the mask digests and, for unstructured sparsity, the sparsity the threshold search
    targeted (the fraction of prunable weights below ε).
    """
    granularity, nm, max_ratio, scope = how.granularity, how.nm, how.max_ratio, how.scope
    dtype, name = how.dtype, how.name
    if not hw.zero_skipping:
        raise ConfigError(
            f"{granularity} sparsity saves energy only on hardware that skips zeros; profile "
            f"'{hw.name}' does not (zero_skipping: false): use --hardware eyeriss-65nm or "
            "--granularity channel"
        )
    modules = _prunable(model, ignored)
    originals = {name: _weight(m).clone() for name, m in modules}

    def energy(masks: dict[str, torch.Tensor]) -> float:
        _apply(modules, masks, originals)
        return profile(model, example, hw, dtype, name=name, shapes_only=True).total.energy_j

    if granularity == "nm":
        n, m = nm
        if not 0 < n < m:
            raise ConfigError(f"N:M needs 0 < N < M, got {n}:{m}")
        eligible = [
            (nm_, mod)
            for nm_, mod in modules
            if _weight(mod).dim() >= 2 and (_weight(mod).shape[1] % m == 0)
        ]
        dense = {nm_: nm_mask(_weight(mod), n, m) for nm_, mod in eligible}
        order = sorted(eligible, key=lambda item: -_weight(item[1]).numel())
        lo, hi = 0, len(order)  # smallest prefix of layers (largest first) meeting the target
        while lo < hi:
            mid = (lo + hi) // 2
            if energy({k: dense[k] for k, _ in order[:mid]}) <= target_j:
                hi = mid
            else:
                lo = mid + 1
        masks = {k: dense[k] for k, _ in order[:lo]}
        energy(masks)
        return _digest(masks, f"{n}:{m}"), None
    lo, hi = 0.0, max_ratio
    if energy(_threshold_masks(modules, hi, scope)) > target_j:
        return _digest(_threshold_masks(modules, hi, scope), "unstructured"), hi  # caller reports
    for _ in range(_SEARCH_STEPS):
        mid = (lo + hi) / 2
        if energy(_threshold_masks(modules, mid, scope)) <= target_j:
            hi = mid
        else:
            lo = mid
    masks = _threshold_masks(modules, hi, scope)
    energy(masks)
    return _digest(masks, "unstructured"), hi


def remask(model: nn.Module, plan) -> nn.Module:
    """Re-register masks (zeros stay zero in fine-tuning) for the weights a plan sparsified,
    e.g. after loading a saved sparse model whose masks were folded in."""
    for name in plan.masks:
        module = model.get_submodule(name.removesuffix(".weight"))
        if not hasattr(module, "weight_orig"):
            torch_prune.custom_from_mask(module, "weight", (module.weight != 0).float())
    return model
