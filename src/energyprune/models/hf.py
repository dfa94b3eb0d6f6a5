"""Hugging Face causal language models from a config alone: ``hf:PATH``.

PATH is a ``config.json``, a folder holding one, or a local model folder. The model is built on
the meta device (shapes, no memory, no values), so a 70B config costs nothing to describe and
the tracer prices it as dense weights. ``transformers`` is the optional ``energyprune[hf]`` extra.
Nothing here touches the network: configs are read from local files only.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.files import read_text
from energyprune.models.placement import placement

__all__ = [
    "HF_PREFIX",
    "LMStep",
    "ServedStep",
    "build_hf",
    "cache_rewinder",
    "config_dtype",
    "decode_step",
    "hf_path",
    "is_hf_spec",
    "kv_layout",
    "meta_twin",
    "moe_experts",
    "prefill_step",
    "read_hf_config",
    "require_transformers",
    "served_step",
    "sliding_windows",
    "token_ids",
]

HF_PREFIX = "hf:"
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
#: Attention as servers run it: SDPA (fused kernels); eager only where transformers has no SDPA
#: path (Gemma-2's logit soft-capping), and then its KV expansion is priced as executed.
_ATTENTION = ("sdpa", "eager")
#: Mixtures of experts run grouped matmuls (one kernel per projection, with static shapes): the
#: per-expert loop needs routing values that a meta tensor does not have.
_EXPERTS = "grouped_mm"


def is_hf_spec(spec: str) -> bool:
    return spec.startswith(HF_PREFIX)


def require_transformers() -> Any:
    """The ``transformers`` module, or a one-line error naming the extra to install. Its own
    progress bars (GGUF conversion, weight loading) are turned off: ours say what is loading,
    and theirs would spill carriage returns into piped logs."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "hf: models need Hugging Face transformers: pip install 'energyprune[hf]'"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


def hf_path(spec: str) -> Path:
    """The ``config.json`` an ``hf:`` spec names (a file, or a folder holding one)."""
    path = Path(spec.removeprefix(HF_PREFIX)).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"no Hugging Face config at {path}: pass hf:PATH with PATH a config.json or a "
            "folder holding one (nothing is downloaded)"
        )
    return path


def read_hf_config(spec: str | os.PathLike[str]) -> Any:
    """The ``PretrainedConfig`` of an ``hf:`` spec, read from the local file only."""
    transformers = require_transformers()
    path = hf_path(str(spec))
    try:
        data = json.loads(read_text(path, "model config"))
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); re-save the model's config") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(f"{path} has no model_type: is it a Hugging Face config.json?")
    model_type = data.pop("model_type")
    try:
        return transformers.AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: transformers {transformers.__version__} cannot build a '{model_type}' "
            f"config ({str(e).splitlines()[0]}); upgrade transformers or fix the file"
        ) from None


def config_dtype(config: Any) -> torch.dtype:
    """The dtype a config says its weights are in (``dtype``/``torch_dtype``); bf16 if none."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, torch.dtype):
        return value
    return _DTYPES.get(str(value).removeprefix("torch."), torch.bfloat16)


def moe_experts(config: Any) -> tuple[int, int] | None:
    """(experts, top-k) of a mixture-of-experts config (Mixtral, Qwen-MoE); None if dense."""
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    return (int(experts), int(top_k)) if experts and top_k else None


def build_hf(
    config: Any, dtype: torch.dtype | None = None, *, seed: int | None = None
) -> nn.Module:
    """A causal LM of ``config`` on the meta device, in eval mode (no memory, no values); with
    ``seed``, on the CPU with random weights drawn from that seed (something to run and time
    when only a config is at hand; the global random state is left as it was)."""
    transformers = require_transformers()
    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if config.model_type not in mapping:
        raise ConfigError(
            f"'{config.model_type}' is not a causal language model transformers knows; "
            "energyprune prices decoder-only LMs (Llama, Mistral, Qwen, Gemma, Phi, Mixtral...)"
        )
    model_class = transformers.AutoModelForCausalLM._model_mapping[type(config)]
    options: dict[str, Any] = {"dtype": dtype or config_dtype(config)}
    if getattr(model_class, "_can_set_experts_implementation", lambda: False)():
        options["experts_implementation"] = _EXPERTS
    options["attn_implementation"] = next(
        (a for a in _ATTENTION if a == "eager" or getattr(model_class, f"_supports_{a}", False)),
        "eager",
    )
    if seed is None:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config, **options)
        return model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, **options)
    return model.eval()


@dataclass(frozen=True)
class LMStep:
    """One forward pass of a serving regime: keyword inputs, the cache they hold, and how many
    tokens the step produces (decode) or consumes (prefill)."""

    inputs: dict[str, Any]
    kv_cache: dict[str, torch.Tensor]
    tokens: int


def meta_twin(model: nn.Module) -> nn.Module:
    """``model`` with every parameter and buffer on the meta device (same shapes, no memory,
    no values): a decode step at batch 512 and a long context then allocates nothing. A tensor
    subclass (torchao's quantised weights) becomes a plain tensor of its shape and dtype, so
    its dequantising ops are not traced: how a layer is stored is priced from the config."""
    if all(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return model
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        data = t.detach()
        plain = type(data) is torch.Tensor
        meta = (
            data.to("meta") if plain else torch.empty(data.shape, dtype=data.dtype, device="meta")
        )
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo).eval()


def kv_layout(model: nn.Module) -> tuple[list[int], list[int]]:
    """(KV heads, head dim) of each decoder layer, read from the attention modules (so a
    pruned model's own widths), else from the config."""
    config = model.config
    heads, dims = [], []
    for module in model.modules():
        if not hasattr(module, "head_dim") or not hasattr(module, "config"):
            continue
        k_proj = getattr(module, "k_proj", None)
        if isinstance(k_proj, nn.Linear):
            heads.append(k_proj.out_features // int(module.head_dim))
            dims.append(int(module.head_dim))
        elif hasattr(module, "qkv_proj") or hasattr(module, "o_proj"):
            heads.append(int(config.num_key_value_heads))
            dims.append(int(module.head_dim))
    if len(heads) != config.num_hidden_layers:
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        count = config.num_hidden_layers
        return [int(config.num_key_value_heads)] * count, [int(dim)] * count
    return heads, dims


def _static_cache(model: nn.Module, batch: int, length: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """A static cache of ``length`` positions (sliding layers hold their window), allocated on
    the model's device: the layout a server preallocates."""
    transformers = require_transformers()
    where = placement(model)
    cache = transformers.StaticCache(config=model.config, max_cache_len=length)
    if not hasattr(cache, "early_initialization"):
        raise ConfigError(
            f"pricing per token needs a transformers whose StaticCache preallocates "
            f"(early_initialization, transformers 5.x); this is {transformers.__version__}: "
            "pip install -U 'energyprune[hf]' 'transformers>=5'"
        )
    heads, dims = kv_layout(model)
    if len(set(heads)) == 1 and len(set(dims)) == 1:  # older releases take one int each
        heads, dims = heads[0], dims[0]
    cache.early_initialization(batch, heads, dims, where.dtype, where.device)
    tensors = {}
    for i, layer in enumerate(cache.layers):
        tensors[f"layers.{i}.keys"] = layer.keys
        tensors[f"layers.{i}.values"] = layer.values
    return cache, tensors


def sliding_windows(model: nn.Module) -> tuple[int, ...]:
    """The sliding window of the model's sliding-attention layers, as transformers' cache
    lays them out (empty: every layer attends to the whole context)."""
    transformers = require_transformers()
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if not window:
        return ()
    cache = transformers.StaticCache(config=config, max_cache_len=1)
    return (int(window),) if any(getattr(la, "is_sliding", False) for la in cache.layers) else ()


def _cache_arg(model: nn.Module) -> str:
    """The keyword the model's forward takes its cache by (``cache`` since transformers 5.x
    deprecated ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefill_step(model: nn.Module, batch: int, prompt: int) -> LMStep:
    """A prompt of ``prompt`` tokens per sequence written into an empty cache; logits for the
    last position only (the one a server samples from)."""
    cache, tensors = _static_cache(model, batch, prompt)
    device = placement(model).device
    inputs = {
        "input_ids": torch.zeros(batch, prompt, dtype=torch.long, device=device),
        _cache_arg(model): cache,
        "cache_position": torch.arange(prompt, device=device),
        "use_cache": True,
        "logits_to_keep": 1,
    }
    return LMStep(inputs, tensors, batch * prompt)


def decode_step(model: nn.Module, batch: int, context: int) -> LMStep:
    """One new token per sequence after ``context`` cached tokens: the model's own attention
    reads the cache (GQA, sliding windows, routing as the model runs them)."""
    cache, tensors = _static_cache(model, batch, context + 1)
    device = placement(model).device
    inputs = {
        "input_ids": torch.zeros(batch, 1, dtype=torch.long, device=device),
        _cache_arg(model): cache,
        "cache_position": torch.tensor([context], device=device),
        "use_cache": True,
    }
    return LMStep(inputs, tensors, batch)


def token_ids(
    model: nn.Module, batch: int, length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random token ids ``(batch, length)`` below the model's vocabulary, drawn on the CPU (the
    same ids on every device) and placed on the model's device. Zeros would read one row of
    the embedding, which no server does."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(vocab, (batch, length), generator=generator)
    return ids.to(placement(model).device)


def cache_rewinder(cache: Any) -> Callable[[], None]:
    """A function putting the cache's write position back where it is now. transformers 5.x
    static layers count the tokens written (``cumulative_length``) and write, and place the
    next token, there; rewinding after each pass makes every pass the same one. Releases that
    place tokens by ``cache_position`` have nothing to rewind. The restore is a device copy,
    so it can run inside a CUDA graph."""
    saved = []
    for layer in getattr(cache, "layers", ()):
        length = getattr(layer, "cumulative_length", None)
        if isinstance(length, torch.Tensor):
            saved.append((layer, length.clone(), getattr(layer, "cumulative_length_int", None)))

    def rewind() -> None:
        for layer, length, as_int in saved:
            layer.cumulative_length.copy_(length)
            if as_int is not None:
                layer.cumulative_length_int = as_int

    return rewind


@dataclass(frozen=True)
class ServedStep:
    """A pass a server repeats, ready to run: :meth:`run` is one forward pass that then rewinds
    the cache, so every run is the same steady-state pass. ``prompt_ids`` are the tokens the
    cache holds (decode)."""

    step: LMStep
    model: nn.Module
    rewind: Callable[[], None]
    prompt_ids: torch.Tensor | None = None

    @torch.no_grad()
    def run(self) -> Any:
        out = self.model(**self.step.inputs)
        self.rewind()
        return out


def served_step(
    model: nn.Module, phase: str, batch: int, length: int, *, seed: int = 0
) -> ServedStep:
    """The pass a server runs, on the model's device and dtype, from random ids (``seed``).

    ``prefill``: ``batch`` prompts of ``length`` tokens written into an empty static cache.
    ``decode``: a static cache of ``length + 1`` slots, filled by a real prefill of ``length``
    tokens; each run writes one new token per sequence at position ``length`` (the same slot
    every time), so it is a decode step at context ``length``.
    """
    generator = torch.Generator().manual_seed(seed)
    if phase == "prefill":
        step = prefill_step(model, batch, length)
        inputs = {**step.inputs, "input_ids": token_ids(model, batch, length, generator)}
        rewind = cache_rewinder(step.inputs[_cache_arg(model)])
        return ServedStep(replace(step, inputs=inputs), model, rewind)
    if phase != "decode":
        raise ConfigError(f"a served pass is a prefill or a decode step, not {phase!r}")
    step = decode_step(model, batch, length)
    cache = step.inputs[_cache_arg(model)]
    prompt = token_ids(model, batch, length, generator)
    with torch.no_grad():
        model(
            input_ids=prompt,
            **{_cache_arg(model): cache},
            cache_position=torch.arange(length, device=prompt.device),
            use_cache=True,
            logits_to_keep=1,
        )
    inputs = {**step.inputs, "input_ids": token_ids(model, batch, 1, generator)}
    return ServedStep(replace(step, inputs=inputs), model, cache_rewinder(cache), prompt)
