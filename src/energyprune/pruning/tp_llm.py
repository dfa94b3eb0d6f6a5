"""Torch-Pruning's own LLM recipe (its repository's ``examples/LLMs/prune_llm.py``), run at the
pruning ratio that meets a J/token budget.

The recipe: ``tp.pruner.MetaPruner`` over the whole Hugging Face model, importance
``GroupMagnitudeImportance(p=2, group_reduction="mean")`` (the recipe's ``GroupNormImportance``,
renamed in Torch-Pruning 1.6), local (per-group) ranking, ``round_to=4``, the LM head ignored
as a root. Every attention declares its heads (``q_proj``: query heads, ``k_proj``/``v_proj``:
KV heads); whole heads go (``prune_num_heads``), never head dimensions (RoPE stays intact), at
a head ratio equal to the channel ratio; with GQA Torch-Pruning removes the same number of
query heads from every KV group. The residual stream (embedding, norms, every projection's
input, the LM head's input) is one dependency group, so the hidden size is cut along with the
MLP channels. The config (``hidden_size``, ``intermediate_size``, head counts, an explicit
``head_dim``) and the modules' cached widths are then made to describe the model, as the
recipe does.

Where Torch-Pruning 1.6 or transformers 5 cannot run the recipe as written, it departs:

* the head ratio equals the channel ratio only up to where Torch-Pruning would skip the
  attention cut altogether (with GQA, when no more query heads than KV heads would remain):
  beyond, fewer heads would go at a larger ratio; it is capped there (:func:`max_head_ratio`);
* with GQA, Torch-Pruning roots the attention group at ``v_proj`` and splits its scores into
  as many parts as query heads, which fails unless ``kv_heads x head_dim`` divides evenly
  (SmolLM2's 9 heads over 3 do not): such heads are kept, q, k and v no roots
  (:func:`groups_heads`), and only the hidden size and the MLP are cut;
* transformers 5 refuses a Llama config whose hidden size the head count does not divide, so
  the hidden size is cut on down to a multiple of ``lcm(4, heads)``, by the same importance
  over the same dependency group (the plan keeps the recipe's own as ``recipe_hidden_size``).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from energyprune.energy.lm.per_token import LMProfile
from energyprune.pruning.decoder import Attention, attention_layers, decoder_layers
from energyprune.pruning.hf_config import sync_config

__all__ = [
    "RECIPE",
    "ROUND_TO",
    "TPCut",
    "groups_heads",
    "max_head_ratio",
    "tp_llm_prune",
    "tp_llm_to_budget",
]

RECIPE = (
    "Torch-Pruning examples/LLMs (MetaPruner, GroupMagnitudeImportance p=2, round_to=4, "
    "hidden size pruned)"
)
ROUND_TO = 4  # the recipe's: every pruned width a multiple of 4
MAX_RATIO = 0.9  # the largest pruning ratio the budget search tries
TRIES = 8  # prunings the budget search makes (the largest ratio, then a bisection)


def max_head_ratio(attn: Attention) -> float:
    """The largest head ratio Torch-Pruning 1.6 carries out on this attention. It takes
    ``ceil(ceil(ratio x heads) / kv_heads)`` query heads from every KV group, but skips the
    whole attention cut (silently) when as many query heads as KV heads would remain: two per
    group must stay (none can go from groups of two). Without GQA it takes ``ceil(ratio x
    heads)`` heads, K and V with them: one must stay."""
    heads, kv = attn.q.out_features // attn.head_dim, attn.kv_heads
    keep = 2 * kv if heads != kv else 1
    return max(0.0, (heads - keep) / heads - 1e-9)  # 1e-9: ceil(ratio x heads) stays exact


def _num_heads(model: nn.Module) -> dict[nn.Module, int]:
    """What the recipe declares: every layer's query heads on ``q_proj``, KV heads on ``k_proj``
    and ``v_proj``."""
    found: dict[nn.Module, int] = {}
    for attn in attention_layers(model):
        m = attn.module
        found[m.q_proj] = attn.q.out_features // attn.head_dim
        found[m.k_proj] = found[m.v_proj] = attn.kv_heads
    return found


def groups_heads(attn: Attention) -> bool:
    """Whether Torch-Pruning 1.6 can rank this attention's heads: with GQA it roots the group at
    ``v_proj`` and splits its ``kv_heads x head_dim`` scores into as many parts as query heads,
    which fails (a shape error) unless they divide evenly."""
    heads, kv = attn.q.out_features // attn.head_dim, attn.kv_heads
    return heads == kv or (kv * attn.head_dim) % heads == 0


def tp_llm_prune(model: nn.Module, input_ids: torch.Tensor, ratio: float) -> dict[str, Any]:
    """Prune ``model`` in place by the recipe at ``ratio`` (channels and heads), traced on
    ``input_ids``; returns the ratios used and the widths left. Heads Torch-Pruning cannot
    rank (:func:`groups_heads`) are kept: q, k and v are then no roots, and only the hidden
    size and the MLP are cut."""
    attns = attention_layers(model)
    heads = groups_heads(attns[0])
    head_ratio = min(ratio, max_head_ratio(attns[0])) if heads else 0.0
    with warnings.catch_warnings():  # the norms' weights: "unwrapped parameters", as upstream
        warnings.filterwarnings("ignore", module="torch_pruning")
        pruner = _pruner(model, input_ids, ratio, head_ratio, heads)
        for group in pruner.step(interactive=True):
            group.prune()
        _sync(model)
        recipe_hidden = model.config.hidden_size
        _hidden_fits_heads(model, pruner)
    _sync(model)
    config = model.config
    return {
        "pruning_ratio": ratio,
        "head_pruning_ratio": head_ratio,
        "heads": "declared" if heads else "kept: Torch-Pruning 1.6 cannot rank these GQA heads",
        "recipe_hidden_size": recipe_hidden,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
    }


def _pruner(
    model: nn.Module, input_ids: torch.Tensor, ratio: float, head_ratio: float, heads: bool
):
    """The recipe's ``MetaPruner`` (``heads``: declared and pruned; else q, k, v ignored)."""
    import torch_pruning as tp

    qkv = [
        getattr(a.module, p)
        for a in attention_layers(model)
        for p in ("q_proj", "k_proj", "v_proj")
    ]
    return tp.pruner.MetaPruner(
        model,
        example_inputs={"input_ids": input_ids, "use_cache": False},
        output_transform=lambda out: out.logits,
        importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False,
        pruning_ratio=ratio,
        ignored_layers=[model.get_output_embeddings(), *([] if heads else qkv)],
        num_heads=_num_heads(model) if heads else {},
        prune_num_heads=True,
        prune_head_dims=False,  # whole heads only: RoPE keeps its head size
        head_pruning_ratio=head_ratio,
        round_to=ROUND_TO,
    )


def _hidden_fits_heads(model: nn.Module, pruner: Any) -> None:
    """Cut the hidden size on down to a multiple of the query heads (and of 4) by the same
    importance over the same dependency group: transformers 5 refuses a Llama config whose
    hidden size the head count does not divide, so ``from_pretrained`` could not load it."""
    import torch_pruning as tp

    hidden, heads = model.config.hidden_size, model.config.num_attention_heads
    step = math.lcm(ROUND_TO, heads)
    keep = hidden // step * step
    if keep in (0, hidden):
        return
    embed = model.get_input_embeddings()
    group = pruner.DG.get_pruning_group(embed, tp.prune_embedding_out_channels, list(range(hidden)))
    drop = pruner.importance(group).argsort()[: hidden - keep]
    pruner.DG.get_pruning_group(embed, tp.prune_embedding_out_channels, drop.tolist()).prune()


def _sync(model: nn.Module) -> None:
    """The recipe's config update: the hidden size read from the LM head, head counts and the
    MLP width from the modules (:func:`sync_config`), ``head_dim`` explicit (no longer
    ``hidden_size // heads``), and the widths the modules keep a copy of."""
    config = model.config
    hidden = model.get_output_embeddings().in_features
    config.hidden_size = hidden
    attns = attention_layers(model)
    config.head_dim = attns[0].head_dim
    for layer, attn in zip(decoder_layers(model), attns, strict=True):
        attn.module.num_key_value_groups = attn.group_size
        for module in (layer, layer.mlp):
            if isinstance(getattr(module, "hidden_size", None), int):
                module.hidden_size = hidden
    sync_config(model)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()  # the embedding and the head were cut alike, as two parameters


@dataclass(frozen=True)
class TPCut:
    """The recipe's cut at the ratio the search kept: the model, its priced J/token over the
    dense model's, and what was done (``met``: whether the budget holds)."""

    model: nn.Module
    energy_ratio: float
    plan: dict[str, Any]


def tp_llm_to_budget(
    dense: nn.Module,
    input_ids: torch.Tensor,
    target: float,
    price: Callable[[nn.Module], LMProfile],
    slack: float = 1e-3,
) -> TPCut:
    """The smallest pruning ratio in [0, 0.9] whose priced J/token over ``dense``'s is within
    ``target + slack``, bisected (each try prunes a copy of ``dense``); when even 0.9 misses
    it, the cut at 0.9 with ``met: False`` and the ratio reached."""
    dense_j = price(dense).energy_j

    def cut(ratio: float) -> TPCut:
        model = copy.deepcopy(dense)
        done = tp_llm_prune(model, input_ids.to(_device(model)), ratio)
        return TPCut(model, price(model).energy_j / dense_j, done)

    best = cut(MAX_RATIO)
    low, high = 0.0, MAX_RATIO
    met = best.energy_ratio <= target + slack
    for _ in range(TRIES - 1 if met else 0):
        found = cut((low + high) / 2)
        if found.energy_ratio <= target + slack:
            best, high = found, (low + high) / 2
        else:
            low = (low + high) / 2
    plan = {"recipe": RECIPE, **best.plan, "met": met, "reached": best.energy_ratio}
    return TPCut(best.model, best.energy_ratio, plan)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
