"""A Hugging Face model's config made to describe its pruned modules.

Channel removal shrinks weights; the model's ``config`` still names the dense widths, and every
tool that reads it (``save_pretrained`` → ``from_pretrained``, generation caches, exporters)
would then build a model that does not exist. :func:`sync_config` reads the widths back from
the modules, per layer, and writes every field that changed:

* uniform across layers: the field itself (``num_attention_heads``, ``num_key_value_heads``,
  ``intermediate_size``), with ``head_dim`` made explicit when the head count changes (the
  default ``hidden_size // num_attention_heads`` would no longer be the head size);
* different per layer: Hugging Face configs hold one width per field, so the field becomes
  the widest layer's (an upper bound for anything sized from it) and the per-layer widths go
  in ``config.per_layer_widths``. ``from_pretrained`` then refuses the checkpoint with a shape
  mismatch instead of loading it wrongly; :func:`energyprune.pruning.export.load` rebuilds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["PER_LAYER", "config_widths", "sync_config"]

PER_LAYER = "per_layer_widths"
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


def _linear(module: nn.Module, child: str) -> nn.Linear | None:
    found = getattr(module, child, None)
    return found if isinstance(found, nn.Linear) else None


def _head_size(module: nn.Module) -> int | None:
    """Per-head width of a Hugging Face attention module (BERT-style or LLaMA-style)."""
    size = getattr(module, "attention_head_size", getattr(module, "head_dim", None))
    has_projections = _linear(module, "query") or _linear(module, "q_proj")
    return size if isinstance(size, int) and has_projections is not None else None


def _query_heads(module: nn.Module) -> int | None:
    size, q = _head_size(module), _linear(module, "query") or _linear(module, "q_proj")
    return q.out_features // size if size and q is not None else None


def _kv_heads(module: nn.Module) -> int | None:
    size, k = _head_size(module), _linear(module, "k_proj")
    return k.out_features // size if size and k is not None else None


def _intermediate(module: nn.Module) -> int | None:
    """Hidden width of a transformer MLP: LLaMA-style ``up_proj`` or BERT's ``*Intermediate``."""
    up = _linear(module, "up_proj")
    if up is not None:
        return up.out_features
    dense = _linear(module, "dense")
    return dense.out_features if dense and type(module).__name__.endswith("Intermediate") else None


#: config field → the width one module gives it (None: the module has no such width)
READERS: dict[str, Callable[[nn.Module], int | None]] = {
    "num_attention_heads": _query_heads,
    "num_key_value_heads": _kv_heads,
    "intermediate_size": _intermediate,
    "head_dim": _head_size,
}


def config_widths(model: nn.Module) -> dict[str, list[int]]:
    """Config field → its width in each layer, in layer order, read from the modules."""
    found: dict[str, dict[int, int]] = {}
    for name, module in model.named_modules():
        layer = _LAYER.search(name)
        if layer is None:  # embeddings, heads, the model itself: no per-layer width
            continue
        for field, read in READERS.items():
            width = read(module)
            if width is not None:
                found.setdefault(field, {}).setdefault(int(layer.group(1)), width)
    return {field: [w for _, w in sorted(by_layer.items())] for field, by_layer in found.items()}


def sync_config(model: nn.Module) -> dict[str, Any]:
    """Write the modules' widths into ``model.config`` (a Hugging Face config; other models are
    left alone); returns ``{field: (old, new)}`` for each field that changed."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}
    widths = config_widths(model)
    per_layer = dict(getattr(config, PER_LAYER, None) or {})
    changed: dict[str, Any] = {}
    for field, values in widths.items():
        if field == "head_dim" or not hasattr(config, field):
            continue  # whole heads go: the head size never changes
        if len(set(values)) > 1:
            per_layer[field] = values
        else:
            per_layer.pop(field, None)
        old, new = getattr(config, field), max(values)
        if old != new:
            setattr(config, field, new)
            changed[field] = (old, new)
    if "num_attention_heads" in changed and getattr(config, "head_dim", None) is None:
        config.head_dim = widths["head_dim"][0]  # no longer hidden_size // num_attention_heads
        changed["head_dim"] = (None, config.head_dim)
    for module in model.modules():  # LLaMA's MLP keeps its own copy of the width
        width = _intermediate(module)
        if width is not None and isinstance(getattr(module, "intermediate_size", None), int):
            module.intermediate_size = width
    if per_layer or hasattr(config, PER_LAYER):
        setattr(config, PER_LAYER, per_layer)
    return changed
