"""Save and load pruned decoder LMs so that the ecosystem can read them.

Widths shared by every layer fit a Hugging Face config: the folder (``config.json``,
``model.safetensors``, tokenizer files) loads with ``AutoModelForCausalLM.from_pretrained``;
layers stored as int8 / int4 are written as torchao tensors that it loads quantised
(:mod:`.lm_torchao`).
Widths that differ per layer do not: Llama's and Qwen3's configs hold one width per field, and
their classes do not build layers from transformers' ``per_layer_config``. Such a folder also
gets ``plan.json``, the widths of every layer, which :func:`load_lm` replays: it builds the
model from ``config.json``, shrinks each layer to its widths, then loads the safetensors
strictly. Nothing is pickled; no code is read from the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.energy.lm.serving import layer_bits_of
from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_write_text, read_text
from energyprune.models.zoo import read_state_dict
from energyprune.pruning.decoder import attention_layers, decoder_layers, resize_layer
from energyprune.pruning.hf_config import PER_LAYER, config_widths, sync_config
from energyprune.pruning.lm_kv import round_kv
from energyprune.pruning.lm_torchao import float_weights, save_torchao

__all__ = ["LM_PLAN", "LogitsOnly", "lm_for_pricing", "load_lm", "open_lm", "save_lm"]

LM_PLAN = "plan.json"
FORMAT = "energyprune.lm-widths/1"


def save_lm(model: nn.Module, folder: str | os.PathLike[str], tokenizer: Any = None) -> str | None:
    """Write ``model`` (and ``tokenizer``) to ``folder``; returns None when ``from_pretrained``
    loads it, else the one-line reason it does not (then ``plan.json`` is written too)."""
    out = Path(folder)
    config = model.config
    per_layer = dict(getattr(config, PER_LAYER, None) or {})
    heads = config.num_attention_heads
    unsaid = _invalid_heads(config)  # a head count the config class refuses to hold
    if unsaid is not None:
        per_layer["num_attention_heads"] = config_widths(model)["num_attention_heads"]
        config.num_attention_heads = unsaid
    stored = bool(layer_bits_of(config)[1])
    try:
        if stored and not per_layer and unsaid is None:  # from_pretrained loads it quantised
            out.mkdir(parents=True, exist_ok=True)
            save_torchao(model, out)
        else:
            model.save_pretrained(out)  # safetensors
    finally:
        config.num_attention_heads = heads
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if not per_layer:
        (out / LM_PLAN).unlink(missing_ok=True)
        return None
    plan = {"format": FORMAT, "class": type(model).__name__, "widths": config_widths(model)}
    atomic_write_text(out / LM_PLAN, json.dumps(plan, indent=2) + "\n")
    if unsaid is not None:
        return (
            f"{heads} query heads do not divide the hidden size {config.hidden_size}, which "
            f"{type(config).__name__} refuses: load it with energyprune.load_lm(folder)"
        )
    return (
        f"widths differ per layer ({', '.join(sorted(per_layer))}), which "
        f"{type(config).__name__} cannot describe: load it with energyprune.load_lm(folder)"
    )


def _invalid_heads(config: Any) -> int | None:
    """None when the config validates; else the nearest larger head count that does (the
    folder's ``plan.json`` then holds the real one per layer)."""
    validate = getattr(config, "validate", None)
    if validate is None or _validates(config):
        return None
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    for n in range(heads + 1, config.hidden_size + 1):
        if config.hidden_size % n == 0 and n % kv == 0:
            return n
    return None


def _validates(config: Any) -> bool:
    try:
        config.validate()
    except Exception:  # transformers' strict-dataclass error, whatever its class
        return False
    return True


def _plan(path: Path) -> dict[str, list[int]]:
    try:
        plan = json.loads(read_text(path, "LM plan"))
        if not isinstance(plan, dict) or plan.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} plan")
        widths = plan["widths"]
        if not all(
            isinstance(v, list) and all(isinstance(w, int) for w in v) for v in widths.values()
        ):
            raise ValueError("widths must be lists of integers")
        return widths
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"{path} is not a valid LM plan ({first_line(e)}): save the model again"
        ) from e


def load_lm(folder: str | os.PathLike[str]) -> nn.Module:
    """A saved pruned LM: ``from_pretrained`` when its widths are uniform, else the config
    built, every layer shrunk to ``plan.json``'s widths and the safetensors loaded strictly; K
    and V rounded as the config records the cache stored (:mod:`.lm_kv`)."""
    from energyprune.models.hf import require_transformers

    transformers = require_transformers()
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json: pass a folder written by save_lm")
    if not (path / LM_PLAN).is_file():
        model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        float_weights(model)  # torchao-stored layers as floats on their grids
        round_kv(model)  # a KV cache the plan stores quantised is rounded again
        return model
    widths = _plan(path / LM_PLAN)
    config = transformers.AutoConfig.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_config(config)
    layers, attns = decoder_layers(model), attention_layers(model)
    if any(len(v) != len(layers) for v in widths.values()):
        raise ConfigError(
            f"{path / LM_PLAN} names widths for another number of layers than "
            f"config.json's {len(layers)}: save the model again"
        )
    for i, (layer, attn) in enumerate(zip(layers, attns, strict=True)):
        resize_layer(layer, attn, {k: v[i] for k, v in widths.items() if k != "head_dim"})
    _load_state(model, path)
    sync_config(model)
    round_kv(model)
    return model.eval()


def _load_state(model: nn.Module, path: Path) -> None:
    """Strict, except for tied weights (the output head saved once, as the embedding)."""
    state = read_state_dict(path / "model.safetensors")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that does not fit
        raise ConfigError(
            f"{path} does not fit its plan.json ({first_line(e)}): save the model again"
        ) from e
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied:
        raise ConfigError(
            f"{path}/model.safetensors does not fit its config: missing "
            f"{sorted(set(missing) - tied)[:2]}, unexpected {unexpected[:2]}; "
            "save the model again"
        )
    model.tie_weights()


def open_lm(spec: str):
    """A language model and its tokenizer by name: a built-in (``smollm2-135m``), or a Hugging
    Face folder with weights (``hf:DIR``, ``DIR``, or a run folder ``prune --out`` wrote),
    per-layer widths replayed from its ``plan.json``. Nothing is downloaded."""
    from energyprune.models import lms
    from energyprune.models.hf import require_transformers

    if spec in lms.BUILTIN_LMS:
        return lms.load_builtin_lm(spec)
    folder = lms.lm_folder(spec)
    if folder is None or not any(folder.glob("*.safetensors")):
        raise ConfigError(
            f"'{spec}' is not a language model folder with weights: pass a built-in "
            f"({', '.join(lms.BUILTIN_LMS)}) or hf:DIR with DIR a save_pretrained folder "
            "(config.json and safetensors)"
        )
    transformers = require_transformers()
    model = load_lm(folder)
    attention_layers(model)  # a layout our cuts do not know fails here, in one line
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{folder} has no tokenizer transformers can read ({first_line(e)}): save the "
            "tokenizer beside the model (tokenizer.save_pretrained)"
        ) from None
    return lms.LoadedLM(model.eval(), tokenizer, spec, f"weights from {folder}")


def lm_for_pricing(spec: str) -> Any:
    """What :func:`~energyprune.profile_lm` prices for a model spec: a built-in's config, a
    folder's ``config.json``, or (when its widths differ per layer, ``plan.json``) the model
    replayed from the folder."""
    from energyprune.models import lms
    from energyprune.models.hf import read_hf_config

    if spec in lms.BUILTIN_LMS:
        return lms.builtin_lm_config(spec)
    folder = lms.lm_folder(spec)
    if folder is not None and (folder / LM_PLAN).is_file():
        return load_lm(folder)
    return read_hf_config(spec if folder is None else str(folder))


class LogitsOnly(nn.Module):
    """A causal LM as a plain function of token ids to logits, without a cache: what ONNX
    export and the forward-pass meter run (one pass over a whole window of tokens)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids):
        return self.lm(input_ids=input_ids, use_cache=False).logits
