"""Structured cuts of decoder-only language models that a dependency graph does not express.

* **KV groups (GQA-aware).** A KV head and the query heads that share it go together, so the
  query heads stay a multiple of the KV heads (:func:`prune_kv_groups`). Or the same number of
  query heads leaves every group (:func:`prune_query_heads`), the KV heads stay.
* **Whole decoder layers** (:func:`drop_layers`), ranked by block influence: 1 - cos(layer
  input, layer output) on calibration text (:func:`block_influence`, ShortGPT's measure).

MLP channels (gate, up and down together) go through Torch-Pruning's dependency graph of the
MLP (:func:`prune_mlp_channels`), as every CNN and ViT width does. After every cut the config
is made to describe the modules again (:func:`energyprune.pruning.hf_config.sync_config`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.placement import to_model
from energyprune.pruning.hf_config import sync_config

__all__ = [
    "Attention",
    "attention_layers",
    "block_influence",
    "decoder_layers",
    "drop_layers",
    "group_importance",
    "head_channels",
    "input_sq_norms",
    "prune_kv_groups",
    "prune_mlp_channels",
    "prune_query_heads",
    "resize_layer",
    "wanda_columns",
]


@dataclass(frozen=True)
class Attention:
    """A LLaMA-style attention module (q, k, v, o projections) and its head layout."""

    module: nn.Module
    head_dim: int

    @property
    def q(self) -> nn.Linear:
        return self.module.q_proj

    @property
    def kv_heads(self) -> int:
        return self.module.k_proj.out_features // self.head_dim

    @property
    def group_size(self) -> int:
        return self.q.out_features // self.head_dim // self.kv_heads


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layer list (``model.model.layers`` in Llama, Qwen, Mistral...)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{type(model).__name__} has no model.layers: decoder cuts take Hugging Face "
            "decoder-only LMs (Llama, Qwen, Mistral, ...)"
        )
    return layers


def attention_layers(model: nn.Module) -> list[Attention]:
    """Each decoder layer's attention, in layer order."""
    found = []
    for layer in decoder_layers(model):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(
            hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            raise ConfigError(f"{type(attn).__name__} has no separate q/k/v/o projections")
        found.append(Attention(attn, int(attn.head_dim)))
    return found


def _rows(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[keep].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[keep].clone())
    linear.out_features = len(keep)


def _cols(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.data[:, keep].clone())
    linear.in_features = len(keep)


def head_channels(heads: Iterable[int], head_dim: int) -> torch.Tensor:
    """The projection channels of ``heads`` (``head_dim`` each), in head order."""
    return torch.tensor(
        [h * head_dim + i for h in heads for i in range(head_dim)], dtype=torch.long
    )


def prune_kv_groups(attn: Attention, keep: Sequence[int]) -> None:
    """Keep KV groups ``keep`` (each: one K head, one V head and its query heads)."""
    keep = sorted(set(keep))
    if not keep or keep[-1] >= attn.kv_heads or keep[0] < 0:
        raise ConfigError(
            f"keep 1..{attn.kv_heads} of KV groups 0..{attn.kv_heads - 1}, got {keep}"
        )
    g = attn.group_size
    queries = head_channels([k * g + j for k in keep for j in range(g)], attn.head_dim)
    kv = head_channels(keep, attn.head_dim)
    m = attn.module
    _rows(m.q_proj, queries)
    _rows(m.k_proj, kv)
    _rows(m.v_proj, kv)
    _cols(m.o_proj, queries)


def prune_mlp_channels(mlp: nn.Module, keep: torch.Tensor) -> str:
    """Keep MLP channels ``keep``: gate and up lose output rows, down the same input columns.

    The coupling comes from Torch-Pruning's dependency graph of the MLP (traced on one token);
    our own index selection is the fallback when its group is not exactly gate, up and down
    (an MLP it cannot trace). Returns which did it: "torch-pruning" or "own"."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    width = mlp.down_proj.in_features
    removed = sorted(set(range(width)) - set(keep.tolist()))
    if not removed:
        return "none"
    if _graph_cut(mlp, removed):
        return "torch-pruning"
    _rows(mlp.gate_proj, keep)
    _rows(mlp.up_proj, keep)
    _cols(mlp.down_proj, keep)
    return "own"


def _graph_cut(mlp: nn.Module, removed: list[int]) -> bool:
    import torch_pruning as tp

    from energyprune.pruning.tracing import build_graph

    weight = mlp.gate_proj.weight
    try:
        x = torch.zeros(1, 1, mlp.gate_proj.in_features, dtype=weight.dtype, device=weight.device)
        graph = build_graph(mlp, (x,), {})
        group = graph.get_pruning_group(mlp.gate_proj, tp.prune_linear_out_channels, removed)
    except Exception:  # any tracing failure means: cut it ourselves
        return False
    linears = {dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Linear)}
    if linears != {mlp.gate_proj, mlp.up_proj, mlp.down_proj}:
        return False
    group.prune()
    return True


def prune_query_heads(attn: Attention, keep_per_group: int, scores: torch.Tensor) -> None:
    """Keep the ``keep_per_group`` best query heads of every group (``scores``: one per query
    head), so every KV head keeps the same number of queries."""
    g = attn.group_size
    if not 1 <= keep_per_group <= g:
        raise ConfigError(f"keep 1..{g} query heads per group, got {keep_per_group}")
    per_group = scores.view(attn.kv_heads, g)
    best = per_group.topk(keep_per_group, dim=1).indices.sort(dim=1).values
    heads = [int(k * g + j) for k in range(attn.kv_heads) for j in best[k]]
    queries = head_channels(heads, attn.head_dim)
    _rows(attn.module.q_proj, queries)
    _cols(attn.module.o_proj, queries)
    attn.module.num_key_value_groups = keep_per_group


def resize_layer(layer: nn.Module, attn: Attention, widths: dict[str, int]) -> None:
    """Shrink one decoder layer to ``widths`` (config field → width: ``intermediate_size``,
    ``num_attention_heads``, ``num_key_value_heads``), keeping the first channels: the shapes
    a saved per-layer checkpoint's weights are then loaded into."""
    if "intermediate_size" in widths:
        prune_mlp_channels(layer.mlp, torch.arange(widths["intermediate_size"]))
    kv = widths.get("num_key_value_heads", attn.kv_heads)
    queries = widths.get("num_attention_heads", attn.q.out_features // attn.head_dim)
    if queries % kv:
        raise ConfigError(f"{queries} query heads do not share {kv} KV heads evenly")
    m = attn.module
    _rows(m.q_proj, torch.arange(queries * attn.head_dim))
    _cols(m.o_proj, torch.arange(queries * attn.head_dim))
    _rows(m.k_proj, torch.arange(kv * attn.head_dim))
    _rows(m.v_proj, torch.arange(kv * attn.head_dim))
    m.num_key_value_groups = queries // kv


def drop_layers(model: nn.Module, drop: Iterable[int]) -> None:
    """Remove decoder layers ``drop``; the kept ones are renumbered for the cache."""
    layers = decoder_layers(model)
    drop = set(drop)
    kept = [layer for i, layer in enumerate(layers) if i not in drop]
    if not kept:
        raise ConfigError("cannot drop every decoder layer")
    for i, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    model.model.layers = nn.ModuleList(kept)
    config = model.config
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(layers):
        config.layer_types = [t for i, t in enumerate(types) if i not in drop]
    config.num_hidden_layers = len(kept)
    sync_config(model)


@torch.no_grad()
def block_influence(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[float]:
    """1 - cos(input, output) of each decoder layer, averaged over calibration tokens: a layer
    that barely turns its input is the cheapest to lose."""
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    count = 0

    def hook(i):
        def record(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            sums[i] += float((1 - cos).sum())

        return record

    handles = [
        layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        for ids in batches:
            model(input_ids=to_model(ids, model))
            count += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
    return [s / max(count, 1) for s in sums]


@torch.no_grad()
def input_sq_norms(
    model: nn.Module, linears: Sequence[nn.Linear], batches: Iterable[torch.Tensor]
) -> list[torch.Tensor]:
    """Σ x² of each input channel of each of ``linears`` over calibration ``batches`` (the
    ||X||₂² of Wanda's |W| x ||X||₂), collected by forward pre-hooks."""
    sums = [torch.zeros(lin.in_features) for lin in linears]

    def hook(i):
        def record(module, args):
            x = args[0].float().reshape(-1, args[0].shape[-1])
            sums[i] += (x * x).sum(dim=0).cpu()

        return record

    handles = [lin.register_forward_pre_hook(hook(i)) for i, lin in enumerate(linears)]
    try:
        for ids in batches:
            model(input_ids=to_model(ids, model))
    finally:
        for handle in handles:
            handle.remove()
    return sums


def wanda_columns(linear: nn.Linear, sq_norms: torch.Tensor) -> torch.Tensor:
    """Per input channel of ``linear``: Σ_rows |W| x ||X||₂ (a structured Wanda score)."""
    return (linear.weight.detach().abs().float().cpu() * sq_norms.sqrt()).sum(dim=0)


def group_importance(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the importance of each query head: Wanda's |W| x ||X||_2 summed over the
    head's columns of ``o_proj`` (the head's output channels, scored on calibration text)."""
    attns = attention_layers(model)
    o_projs = [a.module.o_proj for a in attns]
    norms = input_sq_norms(model, o_projs, batches)
    return [
        wanda_columns(o, sq).view(-1, a.head_dim).sum(dim=1)
        for a, o, sq in zip(attns, o_projs, norms, strict=True)
    ]
