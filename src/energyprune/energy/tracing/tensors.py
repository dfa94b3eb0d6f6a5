"""Small helpers on the tensors a traced forward takes and returns: their dtype names, the
tensors inside a nest of inputs, and how to call a model with them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from energyprune.errors import ConfigError

__all__ = ["as_call", "dtype_name", "tensors_in"]

_DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int8: "int8",
    torch.uint8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.bool: "bool",
    torch.float8_e4m3fn: "fp8_e4m3",
    torch.float8_e4m3fnuz: "fp8_e4m3",
    torch.float8_e5m2: "fp8_e5m2",
    torch.float8_e5m2fnuz: "fp8_e5m2",
}


def dtype_name(dtype: torch.dtype) -> str:
    """Short name of a torch dtype (``torch.float16`` → ``"fp16"``)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """The tensors in a nest of tuples, lists and dicts (inputs, outputs), in order."""
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def as_call(example_inputs: Any) -> tuple[tuple, dict]:
    """``(args, kwargs)`` to call a model with: a tensor, a tuple of inputs, or a dict."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, str):
        return tuple(example_inputs), {}
    raise ConfigError(
        "example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword "
        f"inputs, got {type(example_inputs).__name__}"
    )
