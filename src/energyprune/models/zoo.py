"""Resolve a model spec (built-in, torchvision name, ``module:factory``) and load weights safely.

Weights load through safetensors (single file, or sharded with a Hugging Face style
``*.safetensors.index.json``) or ``torch.load(weights_only=True)``: never an arbitrary unpickle.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from energyprune.errors import ConfigError, WeightsError
from energyprune.files import atomic_write_text, cache_dir
from energyprune.models import architectures
from energyprune.models.fbnet import PREFIX as FBNET_PREFIX
from energyprune.models.fbnet import build_block
from energyprune.models.layerspec import default_input_shape, is_layer_spec, parse_layer

__all__ = [
    "BUILTIN_MODELS",
    "BuiltModel",
    "build_model",
    "load_weights",
    "parse_input_shape",
    "read_state_dict",
]

CIFAR_INPUT = (1, 3, 32, 32)
IMAGENET_INPUT = (1, 3, 224, 224)

#: name → (factory, default input shape)
BUILTIN_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet20": (architectures.resnet20, CIFAR_INPUT),
    "resnet56": (architectures.resnet56, CIFAR_INPUT),
    "vgg16_bn": (architectures.vgg16_bn, CIFAR_INPUT),
    "digits_cnn": (architectures.digits_cnn, (1, 1, 8, 8)),
}


@dataclass(frozen=True)
class BuiltModel:
    """A model and how it was made (the recipe a saved plan needs to rebuild it)."""

    model: nn.Module
    name: str
    source: str  # "builtin" | "torchvision" | "factory" | "layer"
    input_shape: tuple[int, ...]


def _torchvision_names() -> list[str]:
    """torchvision's classification model names, cached per torchvision version: importing
    torchvision to learn them costs ~1 s, which a misspelled name should not pay."""
    try:
        version = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return []
    cached = cache_dir() / f"torchvision-{version}-models.json"
    try:
        names = json.loads(cached.read_text(encoding="utf-8"))
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError):
        pass  # absent or damaged: list them again
    import torchvision

    names = sorted(torchvision.models.list_models(module=torchvision.models))
    with contextlib.suppress(OSError):  # a read-only cache only costs the import next time
        atomic_write_text(cached, json.dumps(names) + "\n")
    return names


def _from_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"cannot import model factory '{spec}' ({e}); pass package.module:function "
            "with the package importable from the current environment"
        ) from e
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory '{spec}' returned {type(model).__name__}, not nn.Module")
    return model


def build_model(spec: str) -> BuiltModel:
    """Build a model from a built-in name, a torchvision classification name, ``module:factory``,
    one ``torch.nn`` constructor call such as ``Conv2d(3, 16, 3)`` (parsed safely) or an FBNet
    block, ``fbnet:ConvBlock_H112_W112_Cin16_Cout16_exp1_kernel3_stride1_group1``.

    Raises:
        ConfigError: unknown name (with close matches) or a factory that cannot be imported.
    """
    if spec in BUILTIN_MODELS:
        factory, shape = BUILTIN_MODELS[spec]
        return BuiltModel(factory(), spec, "builtin", shape)
    if spec.startswith("hf:"):
        raise ConfigError(
            f"'{spec}': hf: language models are priced per token by `energyprune profile` "
            "(and energyprune.profile_lm); this command does not take them yet"
        )
    if spec.startswith(FBNET_PREFIX):  # before module:factory, which it would look like
        block, shape = build_block(spec)
        return BuiltModel(block, spec, "fbnet", shape)
    if is_layer_spec(spec):
        layer = parse_layer(spec)
        return BuiltModel(layer, spec, "layer", default_input_shape(layer))
    if ":" in spec:
        return BuiltModel(_from_factory(spec), spec, "factory", IMAGENET_INPUT)
    names = _torchvision_names()
    if spec in names:
        import torchvision

        return BuiltModel(torchvision.models.get_model(spec), spec, "torchvision", IMAGENET_INPUT)
    close = difflib.get_close_matches(spec, [*BUILTIN_MODELS, *names], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(
        f"unknown model '{spec}': {hint}use a built-in ({', '.join(BUILTIN_MODELS)}), a "
        "torchvision classification model name, package.module:factory, or a torch.nn "
        "constructor such as Conv2d(3, 16, 3)"
    )


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1,3,224,224"`` into a shape tuple of positive integers."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(
            f"malformed input shape '{text}': give positive integers separated by commas, "
            "e.g. 1,3,224,224"
        )
    return shape


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if len(indexes) == 1:
            path = indexes[0]
        else:
            files = sorted(path.glob("*.safetensors"))
            if len(files) != 1:
                raise WeightsError(
                    f"weights folder {path} holds {len(indexes)} index files and {len(files)} "
                    "safetensors files: pass the index JSON or the single file itself"
                )
            return files
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WeightsError(f"cannot read shard index {path}: needs a 'weight_map'") from e
        return [path.parent / shard for shard in sorted(set(weight_map.values()))]
    return [path]


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict: safetensors (file, shard index, folder) or weights-only torch file."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"weights file {p} does not exist: check the path")
    if p.suffix in {".pt", ".pth", ".bin", ".ckpt"}:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"cannot load {p} with torch.load(weights_only=True) ({type(e).__name__}); "
                "save a plain state dict or use safetensors"
            ) from e
        for key in ("state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict):
            raise WeightsError(f"{p} holds a {type(obj).__name__}, not a state dict")
        return obj
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(p):
        if not file.is_file():
            raise WeightsError(f"shard {file} named by the index is missing")
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{file} is not a readable safetensors file: {e}") from e
    return state


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights into ``model`` strictly; a mismatch names what differs and how to fix it."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(
                f"{len(wrong)} of another shape (e.g. {k}: file {tuple(state[k].shape)} vs "
                f"model {tuple(own[k].shape)})"
            )
        raise WeightsError(
            f"weights {path} do not fit this architecture: {'; '.join(detail)} — pass weights "
            "saved from the same model"
        )
    _refuse_non_finite(state, path)
    model.load_state_dict(state, strict=True)
    return model


def _refuse_non_finite(state: dict[str, torch.Tensor], path) -> None:
    """NaN or Inf weights would be ranked, pruned and saved as if they were numbers."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(
                f"weights {path} hold {bad} NaN/Inf value(s) of {tensor.numel()} in '{key}': "
                "pass a checkpoint saved before training diverged"
            )
