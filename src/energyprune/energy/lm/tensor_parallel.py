"""A language model split over N GPUs by tensor parallelism, as serving stacks run it.

Megatron-style tensor parallelism (vLLM, TensorRT-LLM, SGLang) splits every attention block
by heads and every MLP by its inner width, and the embedding and LM head by vocabulary; the
hidden state is whole on every GPU. Each GPU then reads 1/N of the weights and of the KV
cache (KV heads fewer than N are replicated, as vLLM does), does 1/N of the FLOPs, launches
every kernel itself and draws its own static power. After each attention block and each MLP
the partial hidden states are summed across GPUs: one all-reduce over the interconnect, which
sends 2 (N - 1) / N of the hidden state from every GPU (a ring) and takes the link's latency.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from energyprune.energy.hardware.profile import HardwareProfile, Interconnect
from energyprune.energy.lm.layer_split import SUMMED, LayerSplit
from energyprune.energy.pricing.features import itemsize
from energyprune.errors import ConfigError

__all__ = [
    "AllReduce",
    "all_reduce",
    "check_whole",
    "interconnect",
    "one_gpu",
    "over_gpus",
    "pass_all_reduce",
    "shard_config",
]


def _text(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if get else config


def shard_config(config: Any, n: int) -> Any:
    """The shapes one of ``n`` GPUs holds: heads, KV heads, inner widths and vocabulary / n."""
    config = copy.deepcopy(config)
    text = _text(config)
    heads = int(text.num_attention_heads)
    if heads % n:
        raise ConfigError(f"--tensor-parallel {n} must divide the model's {heads} attention heads")
    text.head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    text.num_attention_heads = heads // n
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    text.num_key_value_heads = max(1, kv // n)  # fewer than n: replicated
    for field in ("intermediate_size", "moe_intermediate_size", "vocab_size"):
        if getattr(text, field, None):
            setattr(text, field, math.ceil(int(getattr(text, field)) / n))
    return config


@dataclass(frozen=True)
class AllReduce:
    """The all-reduces of one token over ``gpus`` GPUs: bytes sent by all GPUs, and the wall
    seconds they take."""

    gpus: int
    bytes: float
    seconds: float
    energy_j: float


def interconnect(hw: HardwareProfile, parallelism: str) -> Interconnect:
    """The profile's link between GPUs, which ``parallelism`` ("tensor", "expert") needs."""
    if hw.interconnect is None:
        raise ConfigError(
            f"profile {hw.name} declares no interconnect: {parallelism} parallelism needs its "
            "bandwidth and pJ per byte (interconnect: {bandwidth, pj_per_byte, latency_s})"
        )
    return hw.interconnect


def check_whole(model: nn.Module, parallelism: str) -> None:
    """A model the caller gave must have its config's widths: pricing over GPUs splits the
    config, so a pruned model cannot be split by it."""
    from energyprune.models import hf

    whole = hf.build_hf(model.config)
    if sum(p.numel() for p in whole.parameters()) != sum(p.numel() for p in model.parameters()):
        raise ConfigError(
            f"{parallelism}-parallel pricing splits a model by its config, and this model's "
            "widths differ from it (a pruned model): price it on one GPU"
        )


def pass_all_reduce(hw: HardwareProfile, model: nn.Module, t: Any, dtype: str, n: int):
    """The all-reduces of one traced pass (two per decoder layer of its hidden states),
    weighted by the pass's share of a token."""
    text = _text(model.config)
    tokens = t.batch * (t.length if t.phase == "prefill" else 1)
    count = 2 * text.num_hidden_layers * t.share
    return all_reduce(hw, n, tokens * text.hidden_size, itemsize(dtype), count)


def all_reduce(
    hw: HardwareProfile, gpus: int, elements: float, itemsize: int, count: float
) -> AllReduce:
    """``count`` all-reduces (two per decoder layer, times a pass's share of one token) of
    ``elements`` hidden-state elements each (the pass's tokens × hidden size), ring over
    ``gpus`` GPUs."""
    link = interconnect(hw, "tensor")
    per_gpu = 2 * (gpus - 1) / gpus * elements * itemsize
    seconds = count * (link.latency_s + per_gpu / link.bandwidth)
    sent = count * per_gpu * gpus
    return AllReduce(gpus, sent, seconds, sent * link.pj_per_byte * 1e-12)


def one_gpu(model: nn.Module, n: int, from_config: bool) -> nn.Module:
    """The shard one of ``n`` tensor-parallel GPUs holds, from the model's config. A model the
    caller gave (``from_config`` False) is checked against its config first: one whose widths
    differ from it, a pruned one, cannot be split by it."""
    from energyprune.models import hf

    if not from_config:
        check_whole(model, "tensor")
    return hf.build_hf(shard_config(model.config, n))


def over_gpus(layers, model, traced, hw, dtype: str, n: int) -> tuple[LayerSplit, ...]:
    """One GPU's split, times ``n`` GPUs (wall time stays one GPU's), and the all-reduces: two
    per decoder layer of every pass's hidden states."""
    scaled = tuple(
        dataclasses.replace(layer, **{k: getattr(layer, k) * n for k in SUMMED}) for layer in layers
    )
    links = [pass_all_reduce(hw, model, t, dtype, n) for t in traced]
    seconds = sum(link.seconds for link in links)
    comm = LayerSplit(
        "(all-reduce)",
        "AllReduce",
        activation_bytes=sum(link.bytes for link in links),
        memory_j=sum(link.energy_j for link in links),
        static_j=n * (hw.static_w + hw.active_w) * seconds,
        seconds=seconds,
    )
    return (*scaled, comm)
