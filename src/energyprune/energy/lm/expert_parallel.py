"""A mixture of experts split over N GPUs by expert parallelism, as vLLM runs it.

vLLM's expert parallelism without tensor parallelism (``--data-parallel-size N
--enable-expert-parallel``) runs attention and every dense part data-parallel (each GPU serves
1/N of the running requests with whole weights) and splits each expert stack, E/N experts per
GPU. Each GPU is then priced as the model with E/N experts (routed top-k among them: the same
expert-token MACs, B/N x k per step, as its share of the batch's) at batch B/N; one token's
cost summed over the GPUs is one GPU's cost per token of its own batch. Every MoE layer adds two
all-to-alls (dispatch and combine) of each token's hidden state to its k experts, (N - 1) / N of
them on another GPU, over the profile's interconnect. The router reads E/N rows, not E (a small
error: hidden x E weights against the experts' 3 x hidden x inner x E).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.lm.layer_split import LayerSplit
from energyprune.energy.lm.regimes import Regime
from energyprune.energy.lm.tensor_parallel import check_whole, interconnect
from energyprune.errors import ConfigError

__all__ = ["all_to_all", "expert_shard", "per_gpu_regime"]


def expert_shard(model: nn.Module, n: int, from_config: bool = True) -> nn.Module:
    """The model one of ``n`` expert-parallel GPUs runs: every expert stack / n. A model the
    caller gave (``from_config`` False) must have its config's widths (not a pruned one)."""
    from energyprune.models import hf

    if not from_config:
        check_whole(model, "expert")
    config = copy.deepcopy(model.config)
    text = config.get_text_config(decoder=True)
    moe = hf.moe_experts(text)
    if moe is None:
        raise ConfigError(
            f"--expert-parallel {n} splits experts, and this model has none: use "
            "--tensor-parallel for a dense model"
        )
    if moe[0] % n:
        raise ConfigError(f"--expert-parallel {n} must divide the model's {moe[0]} experts")
    field = "num_local_experts" if getattr(text, "num_local_experts", None) else "num_experts"
    setattr(text, field, moe[0] // n)
    if moe[1] > moe[0] // n:
        raise ConfigError(f"--expert-parallel {n} leaves fewer experts per GPU than top-k")
    return hf.build_hf(config)


def per_gpu_regime(regime: Regime, n: int) -> Regime:
    """The share of the running requests one of ``n`` data-parallel GPUs serves."""
    if regime.batch % n:
        raise ConfigError(
            f"--expert-parallel {n} shares the batch among the GPUs: the batch "
            f"({regime.batch}) must be a multiple of {n}"
        )
    return dataclasses.replace(regime, batch=regime.batch // n)


def all_to_all(hw: HardwareProfile, n: int, traced: Any, config: Any, itemsize: int) -> LayerSplit:
    """The dispatch and combine of every MoE layer, per token, as one GPU pays them."""
    from energyprune.models import hf

    link = interconnect(hw, "expert")
    text = config.get_text_config(decoder=True)
    top_k = hf.moe_experts(text)[1]
    sent = seconds = 0.0
    for t in traced:
        tokens = t.batch * (t.length if t.phase == "prefill" else 1)
        count = 2 * text.num_hidden_layers * t.share
        nbytes = tokens * top_k * text.hidden_size * itemsize * (n - 1) / n
        sent += count * nbytes
        seconds += count * (link.latency_s + nbytes / link.bandwidth)
    return LayerSplit(
        "(all-to-all)",
        "AllToAll",
        activation_bytes=sent,
        memory_j=sent * link.pj_per_byte * 1e-12,
        static_j=(hw.static_w + hw.active_w) * seconds,
        seconds=seconds,
    )
