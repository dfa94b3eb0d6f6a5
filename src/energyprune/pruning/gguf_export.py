"""A pruned Llama-architecture LM as a GGUF file, so that llama.cpp (and Ollama, LM Studio...)
run it.

The layout follows llama.cpp's own converter (``convert_hf_to_gguf.py``, ``LlamaModel``):
tensor names ``token_embd``, ``blk.N.attn_q`` ... ``output``; the rows of Q and K permuted from
Hugging Face's rotary layout (halves) to llama.cpp's (interleaved pairs); norms and other 1-D
tensors in F32. Uniform widths are architecture ``llama`` with scalar widths (transformers'
GGUF loader reads it too). Widths that differ per layer (a plan's MLP width or head counts) are
per-layer arrays of ``feed_forward_length``, ``attention.head_count`` and
``attention.head_count_kv``; llama.cpp parses such arrays for every architecture, but its
``llama`` tensor loader sizes every layer from layer 0, so these files name architecture
``deci`` (Nemotron-NAS: the same tensors and RoPE, each layer sized and run from its own
entries). The file is written beside its target and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.energy.lm.serving import kv_dtype_of
from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_path, check_writable_file
from energyprune.pruning.hf_config import config_widths
from energyprune.pruning.lm_bits import stored_layers

__all__ = [
    "GGUF_BITS",
    "GGUFSummary",
    "check_gguf_bits",
    "check_gguf_config",
    "require_gguf",
    "write_gguf",
]

#: --bits → how 2-D weight matrices are stored (F16, Q8_0, Q4_0: 32 weights a block)
GGUF_BITS = {16: "F16", 8: "Q8_0", 4: "Q4_0"}
_BLOCK = 32
#: llama.cpp's metadata key → the config_widths field it holds, per layer
_WIDTH_KEYS = {
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
}
_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass(frozen=True)
class GGUFSummary:
    """What :func:`write_gguf` wrote: enough for a user to know what llama.cpp will load."""

    path: Path
    size_bytes: int
    bits: int
    architecture: str  # llama (uniform widths) or deci (widths per layer)
    widths: dict[str, list[int]]  # llama.cpp key → width of each layer
    per_layer: bool  # widths differ per layer: written as arrays
    tensors: int
    formats: dict[str, int] = field(default_factory=dict)  # GGUF type -> tensors written so
    f16_fallback: list[str] = field(default_factory=list)  # rows not a multiple of 32
    tokenizer: str | None = None  # what tokenizer metadata went in; None: none
    notes: list[str] = field(default_factory=list)


def require_gguf() -> Any:
    """The ``gguf`` package (llama.cpp's writer), or a one-line install hint."""
    try:
        import gguf
    except ImportError:
        raise ConfigError(
            "GGUF export needs the gguf package: pip install 'energyprune[gguf]'"
        ) from None
    return gguf


def check_gguf_bits(bits: int) -> int:
    """``bits`` when GGUF export writes it (16: F16, 8: Q8_0, 4: Q4_0), else one line."""
    if bits not in GGUF_BITS:
        raise ConfigError(
            f"--bits {bits}: GGUF export writes 16 (F16), 8 (Q8_0) or 4 (Q4_0) bits a weight"
        )
    return bits


def check_gguf_config(config: Any) -> None:
    """One line unless ``config`` (a Hugging Face config) is one GGUF export writes: a Llama
    with plain RoPE (checked before a large model is loaded only to be refused)."""
    kind = getattr(config, "model_type", None)
    names = list(getattr(config, "architectures", None) or ["LlamaForCausalLM"])
    if kind != "llama" or names != ["LlamaForCausalLM"]:
        raise ConfigError(
            "GGUF export supports Llama-architecture models (LlamaForCausalLM) today: "
            f"got {', '.join(names)} (model_type {kind!r})"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    rope_type = dict(rope or {}).get("rope_type", dict(rope or {}).get("type", "default"))
    if rope_type not in (None, "default"):
        raise ConfigError(
            f"GGUF export writes plain RoPE; this model's rope_type {rope_type!r} is not "
            "written yet"
        )


def _check_llama(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if type(model).__name__ != "LlamaForCausalLM":
        raise ConfigError(
            "GGUF export supports Llama-architecture models (LlamaForCausalLM) today: "
            f"got {type(model).__name__} (model_type {getattr(config, 'model_type', None)!r})"
        )
    check_gguf_config(config)
    return config


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face's rotary halves → llama.cpp's interleaved pairs, per head (the
    ``permute`` of convert_hf_to_gguf.py: Q with its query heads, K with its KV heads)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _gguf_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    found = _LAYER_NAME.match(name)
    if found is None or found.group(2) not in _LAYER:
        raise ConfigError(f"GGUF export does not know the Llama tensor {name}")
    return f"blk.{found.group(1)}.{_LAYER[found.group(2)]}.{found.group(3)}"


def _tied(model: nn.Module) -> bool:
    """The output head is the embedding (llama.cpp then falls back to ``token_embd``)."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        return True
    a, b = head.weight, embed.weight
    return a.data_ptr() == b.data_ptr() or (a.shape == b.shape and torch.equal(a, b))


def _tensors(model: nn.Module, head_dim: int) -> list[tuple[str, torch.Tensor]]:
    """(GGUF name, float32 tensor) in llama.cpp's layout, output head left out when tied."""
    tied = _tied(model)
    found = []
    for name, value in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        if name.endswith("rotary_emb.inv_freq"):
            continue
        w = value.detach().float().cpu()
        if ".self_attn.q_proj." in name or ".self_attn.k_proj." in name:
            w = _permute(w, w.shape[0] // head_dim)
        found.append((_gguf_name(name), w))
    return found


def _format(w: torch.Tensor, bits: int) -> str:
    """How one tensor is written: vectors F32; a matrix in its bits' format, F16 where its
    rows are not whole blocks."""
    if w.ndim < 2:
        return "F32"
    return "F16" if bits == 16 or w.shape[-1] % _BLOCK else GGUF_BITS[bits]


def _add_tensor(writer: Any, gguf: Any, name: str, w: torch.Tensor, fmt: str) -> None:
    array = w.numpy()
    if fmt in ("F32", "F16"):
        writer.add_tensor(name, array.astype("float32" if fmt == "F32" else "float16"))
        return
    qtype = getattr(gguf.GGMLQuantizationType, fmt)
    writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def _metadata(writer: Any, gguf: Any, config: Any, widths: dict[str, list[int]], bits: int) -> None:
    writer.add_name(
        Path(str(getattr(config, "_name_or_path", "") or "energyprune")).name or "energyprune"
    )
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(len(widths["feed_forward_length"]))
    writer.add_feed_forward_length(_scalar_or_list(widths["feed_forward_length"]))
    writer.add_head_count(_scalar_or_list(widths["attention.head_count"]))
    writer.add_head_count_kv(_scalar_or_list(widths["attention.head_count_kv"]))
    head_dim = widths["head_dim"][0]
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    ftype = {16: "MOSTLY_F16", 8: "MOSTLY_Q8_0", 4: "MOSTLY_Q4_0"}[bits]
    writer.add_file_type(int(getattr(gguf.LlamaFileType, ftype)))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _scalar_or_list(values: list[int]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else list(values)


def _layer_widths(model: nn.Module) -> dict[str, list[int]]:
    found = config_widths(model)
    widths = {key: found[field] for key, field in _WIDTH_KEYS.items()}
    if len(set(found["head_dim"])) != 1:
        raise ConfigError(
            f"GGUF holds one head size; this model has {sorted(set(found['head_dim']))}"
        )
    return {**widths, "head_dim": found["head_dim"]}


#: a stored layer's format (energyprune_weight_bits) -> the GGUF bits that hold it exactly
_STORED_BITS = {"int8": 8, "fp8": 8, "int4": 4}


def _tensor_bits(model: nn.Module, tensors, bits: int) -> dict[str, int]:
    """GGUF bits per tensor: a layer the plan stored in fewer bits keeps its own (as
    evaluated); every other tensor takes ``bits``."""
    by_block = {f"blk.{i}.": _STORED_BITS[d] for i, d in stored_layers(model)[1]}
    out = {}
    for name, _ in tensors:
        block = next((b for b in by_block if name.startswith(b)), None)
        out[name] = by_block[block] if block else bits
    return out


def write_gguf(
    model: nn.Module,
    path: str | os.PathLike[str],
    bits: int = 16,
    tokenizer: Any = None,
) -> GGUFSummary:
    """Write ``model`` (a LlamaForCausalLM, widths per layer allowed) to ``path`` as GGUF with
    2-D weights in ``bits`` (16: F16, 8: Q8_0, 4: Q4_0; a layer the plan stored as int8 or
    int4 keeps Q8_0 or Q4_0) and, when ``tokenizer`` (a folder with
    ``tokenizer.json``, or a tokenizer with ``save_pretrained``) is a byte-level BPE, the
    tokenizer metadata llama.cpp needs. The path is checked before anything is written."""
    check_gguf_bits(bits)
    target = check_writable_file(path, "--out")
    gguf = require_gguf()
    config = _check_llama(model)
    widths = _layer_widths(model)
    per_layer = any(len(set(widths[k])) > 1 for k in _WIDTH_KEYS)
    arch = "deci" if per_layer else "llama"
    tensors = _tensors(model, widths["head_dim"][0])
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        _metadata(writer, gguf, config, widths, bits)
        described, notes = _add_tokenizer(writer, gguf, tokenizer, int(config.vocab_size))
        per_tensor = _tensor_bits(model, tensors, bits)
        formats = {name: _format(w, per_tensor[name]) for name, w in tensors}
        for name, w in tensors:
            _add_tensor(writer, gguf, name, w, formats[name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    fallback = [n for n, _ in tensors if formats[n] == "F16" and per_tensor[n] != 16]
    if fallback:
        named = ", ".join(fallback[:3]) + (", ..." if len(fallback) > 3 else "")
        notes.append(f"{len(fallback)} matrices kept F16, rows not a multiple of {_BLOCK}: {named}")
    kv = kv_dtype_of(model.config)
    if kv:  # a runtime setting: GGUF has no field for it
        cache = {"int8": "q8_0", "int4": "q4_0"}.get(kv, kv)
        notes.append(
            f"the plan stores the KV cache as {kv}, which a GGUF cannot carry: serve with "
            f"--cache-type-k {cache} --cache-type-v {cache} -fa"
        )
    return GGUFSummary(
        path=target,
        size_bytes=target.stat().st_size,
        bits=bits,
        architecture=arch,
        widths={k: v for k, v in widths.items() if k != "head_dim"},
        per_layer=per_layer,
        tensors=len(tensors),
        formats=dict(Counter(formats.values()).most_common()),
        f16_fallback=fallback,
        tokenizer=described,
        notes=notes,
    )


def _add_tokenizer(
    writer: Any, gguf: Any, tokenizer: Any, vocab_size: int
) -> tuple[str | None, list[str]]:
    """Tokenizer metadata from a folder or a tokenizer object; (description, notes)."""
    if tokenizer is None:
        return None, ["no tokenizer: llama.cpp needs one (export from a folder that has one)"]
    if hasattr(tokenizer, "save_pretrained"):
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            tokenizer.save_pretrained(folder)
            return _add_tokenizer(writer, gguf, folder, vocab_size)
    path = Path(tokenizer) / "tokenizer.json"
    if not path.is_file():
        return None, [f"no tokenizer.json in {path.parent}: llama.cpp needs a tokenizer"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, [f"{path} unreadable ({first_line(e)}): tokenizer not written"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        return None, [
            f"its {model.get('type')} tokenizer is not a byte-level BPE: tokenizer not written, "
            "llama.cpp needs one"
        ]
    tokens, types = _vocab(gguf, model["vocab"], data.get("added_tokens") or [], vocab_size)
    pre = _pre_tokenizer(data.get("pre_tokenizer") or {})
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(path.parent, load_merges=True, n_vocab=vocab_size).add_to_gguf(
        writer, quiet=True
    )
    return f"gpt2 BPE, {len(tokens)} tokens, pre-tokenizer {pre}", []


def _vocab(
    gguf: Any, vocab: dict[str, int], added: list[dict], vocab_size: int
) -> tuple[list[str], list[int]]:
    """Token strings and types by id, as llama.cpp's converter lists them (ids without a
    token become ``[PADn]``, unused; added tokens control or user-defined)."""
    by_id = {int(i): tok for tok, i in vocab.items()}
    special = {}
    for t in added:
        by_id[int(t["id"])] = t["content"]
        special[t["content"]] = bool(t.get("special"))
    kinds = gguf.TokenType
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(kinds.UNUSED))
        elif token in special:
            tokens.append(token)
            types.append(int(kinds.CONTROL if special[token] else kinds.USER_DEFINED))
        else:
            tokens.append(token)
            types.append(int(kinds.NORMAL))
    return tokens, types


def _pre_tokenizer(pre: dict) -> str:
    """llama.cpp's name for the pre-tokenizer (its converter hashes a test string; we read
    the structure): plain byte-level is ``gpt-2``, digits split then byte-level ``smollm``."""
    steps = pre.get("pretokenizers") or [] if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    return "default"
