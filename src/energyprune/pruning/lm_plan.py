"""What the LM energy criterion works with: calibration scores, candidate cuts with their
importance and joules, the plan they add up to, and how a plan is priced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from energyprune.energy.lm.per_token import LMProfile
from energyprune.pruning.lm_sensitivity import Sensitivity

__all__ = ["Cut", "LMPlan", "LMScores", "Price", "module_joules", "prefix_joules"]


@dataclass(frozen=True)
class LMScores:
    """Calibration scores: block influence per layer, Wanda scores per MLP channel and per
    query head, per layer; measured loss rises where probes ran."""

    influence: list[float]
    mlp: list[torch.Tensor]
    heads: list[torch.Tensor]
    measured: Sensitivity | None = None  # calibration-loss probes (pruning/lm_allocate.py)
    bits: dict[str, list[float]] | None = None  # loss rise of each layer stored as int8 / int4
    kv: dict[str, float] | None = None  # loss rise of the whole KV cache as kv-int8 / kv-int4


@dataclass(frozen=True)
class Cut:
    kind: str  # "mlp", "heads", "layer", a weight format ("int8", "int4") or "kv-int8"/"kv-int4"
    layer: int  # -1 for a cut of the whole model (the KV cache's dtype)
    importance: float
    joules: float  # estimated J/token saved


@dataclass
class LMPlan:
    """What to cut, per layer: MLP chunks of ``round_to`` channels and query heads per KV group
    to remove, the layers to drop, each layer's weight format, and the KV cache's dtype."""

    mlp_cut: dict[int, int] = field(default_factory=dict)
    heads_cut: dict[int, int] = field(default_factory=dict)
    drop: list[int] = field(default_factory=list)
    bits: dict[int, str] = field(default_factory=dict)  # layer -> weight format
    kv: str | None = None  # the KV cache's dtype (None: the model's)

    def to_dict(self) -> dict:
        out = {
            "mlp_chunks_cut": self.mlp_cut,
            "query_heads_per_group_cut": self.heads_cut,
            "drop_layers": sorted(self.drop),
        }
        out |= {"weight_bits": self.bits} if self.bits else {}
        return out | ({"kv_cache": self.kv} if self.kv else {})


Price = Callable[[nn.Module], LMProfile]


def module_joules(lm: LMProfile) -> dict[str, float]:
    """Module name -> estimated J/token."""
    return {layer.name: layer.energy_j for layer in lm.layers}


def prefix_joules(joules: dict[str, float], prefix: str) -> float:
    """J/token of the module ``prefix`` and everything under it."""
    return sum(j for name, j in joules.items() if name == prefix or name.startswith(prefix + "."))
