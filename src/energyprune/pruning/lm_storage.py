"""Storage as cuts: each layer's weights as int8 / int4 and the KV cache's dtype, priced and
taken by the energy criterion beside heads, channels and layers (:mod:`.lm_allocate`).

A format's saving is re-priced as width cuts are: one shapes-only twin per format, stored so
(every layer at once for weights: layers price independently; the whole cache for KV), each
layer credited with its own modules. int4 is a cut beyond int8, with the importance and the
joules it adds over it, so the allocator takes int8 first.
"""

from __future__ import annotations

import math

from torch import nn

from energyprune.energy.lm.per_token import LMProfile
from energyprune.errors import ConfigError
from energyprune.pruning.decoder import decoder_layers
from energyprune.pruning.lm_bits import BITS_KINDS, stored_twin
from energyprune.pruning.lm_kv import KV_KINDS, kv_twin
from energyprune.pruning.lm_plan import Cut, LMPlan, LMScores, Price, module_joules, prefix_joules

__all__ = ["STORAGE_KINDS", "bits_cuts", "kv_cuts", "take_storage"]

#: every storage cut kind: weight formats, then KV-cache dtypes
STORAGE_KINDS = (*BITS_KINDS, *KV_KINDS)


def _bits_savings(model: nn.Module, lm: LMProfile, price: Price) -> dict[tuple[str, int], float]:
    """(format, layer) -> J/token storing that layer so saves beyond the format before it."""
    before, saved = module_joules(lm), {}
    layers = [f"model.layers.{i}" for i in range(len(decoder_layers(model)))]
    previous = dict.fromkeys(layers, 0.0)
    for dtype in BITS_KINDS:
        after = module_joules(price(stored_twin(model, dtype)))
        for i, base in enumerate(layers):
            total = max(prefix_joules(before, base) - prefix_joules(after, base), 0.0)
            saved[dtype, i] = max(total - previous[base], 0.0)
            previous[base] = total
    return saved


def bits_cuts(model: nn.Module, lm: LMProfile, scores: LMScores, price: Price) -> list[Cut]:
    """Each layer stored as int8, then as int4 (its importance and saving beyond int8's)."""
    if scores.bits is None:
        raise ConfigError("bit cuts need measured loss rises (LMScores.bits)")
    saved = _bits_savings(model, lm, price)
    int8, int4 = scores.bits["int8"], scores.bits["int4"]
    cuts = []
    for i in range(len(int8)):
        if math.isfinite(int8[i]):
            cuts.append(Cut("int8", i, max(int8[i], 0.0), saved["int8", i]))
            cuts.append(Cut("int4", i, max(int4[i] - int8[i], 0.0), saved["int4", i]))
    return cuts


def kv_cuts(model: nn.Module, lm: LMProfile, scores: LMScores, price: Price) -> list[Cut]:
    """The KV cache as int8, then as int4 (importance and joules beyond int8's)."""
    if scores.kv is None:
        raise ConfigError("KV-cache cuts need measured loss rises (LMScores.kv)")
    cuts, rise, saved = [], 0.0, 0.0
    if not all(math.isfinite(r) for r in scores.kv.values()):
        return []  # heads that are not whole groups: the cache stays as it is
    for kind, dtype in KV_KINDS.items():
        total = max(lm.energy_j - price(kv_twin(model, dtype)).energy_j, 0.0)
        cuts.append(Cut(kind, -1, max(scores.kv[kind] - rise, 0.0), max(total - saved, 0.0)))
        rise, saved = max(scores.kv[kind], rise), max(total, saved)
    return cuts


def take_storage(plan: LMPlan, cut: Cut) -> bool:
    """Take a storage cut into ``plan``: int8 before int4, for a layer's weights or for the KV
    cache (a format out of its order is passed over, and False returned)."""
    if cut.kind in KV_KINDS:
        order, now = list(KV_KINDS), plan.kv and f"kv-{plan.kv}"
    else:
        order, now = list(BITS_KINDS), plan.bits.get(cut.layer)
    previous = order.index(cut.kind) - 1
    if now != (order[previous] if previous >= 0 else None):
        return False
    if cut.kind in KV_KINDS:
        plan.kv = KV_KINDS[cut.kind]
    else:
        plan.bits[cut.layer] = cut.kind
    return True
