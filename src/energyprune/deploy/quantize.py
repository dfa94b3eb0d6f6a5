"""Post-training int8 quantisation (CPU) through PyTorch's maintained PT2E flow, in torchao.

``torch.export`` → ``prepare_pt2e`` with the x86 Inductor quantizer (per-channel weights) →
calibration batches from the validation split → ``convert_pt2e``. Layers kept in floating point
(mixed precision) are skipped by name. The estimate prices the quantised layers as int8 in the
same energy model (``layer_dtypes``); speed and energy must be measured — the converted model
runs int8 kernels only under ``torch.compile``.

Saved as a ``torch.export`` program (``model.pt2``, PyTorch's documented exported-program
format) plus ``quant.json``; loading uses ``torch.export.load``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import types
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_path, atomic_write_text, read_text
from energyprune.models.layers import folded_copy
from energyprune.models.placement import example_input

__all__ = [
    "QuantizedModel",
    "load_quantized",
    "quantize_int8",
    "quantize_int8_linear",
    "save_quantized",
    "torchao_quietly",
]

_BATCH = ({0: torch.export.Dim("batch", min=1)},)  # any batch size


class _ReLU(nn.Module):
    """Functional ReLU: a module called twice (torchvision's and our BasicBlock reuse one) makes
    the quantizer's fusion partitions ambiguous; one functional call per use does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@contextlib.contextmanager
def torchao_quietly() -> Iterator[None]:
    """Import torchao without torch's pytree warnings about its enums (``register_constant``
    is deprecated for Enum subclasses): torchao's to fix, nothing a user can act on."""
    log = logging.getLogger("torch.utils._pytree")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _unshare_activations(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.ReLU:
                setattr(module, name, _ReLU())
    return model


def _allow_eval(module: nn.Module) -> nn.Module:
    """Exported modules refuse ``.train()``/``.eval()``; the pipeline calls them everywhere
    (and chains them, so they return the module, unlike torchao's helper). Only dropout and
    batch norm change behaviour, which is all an exported graph can switch."""
    with torchao_quietly():
        from torchao.quantization.pt2e import (
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

    def train(self, mode: bool = True):
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
        object.__setattr__(self, "training", mode)
        return self

    module.train = types.MethodType(train, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(lambda self: self.train(False), module)  # type: ignore[method-assign]
    return module


@dataclass
class QuantizedModel:
    """The converted int8 module and what the energy model needs to price it."""

    module: nn.Module
    int8_layers: list[str]
    float_layers: list[str] = field(default_factory=list)
    example_shape: list[int] = field(default_factory=list)

    @property
    def layer_dtypes(self) -> dict[str, str]:
        return dict.fromkeys(self.int8_layers, "int8")


def _quantizer(skip: Sequence[str], qat: bool = False):
    try:
        with torchao_quietly():
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    except ImportError as e:
        raise ConfigError("int8 quantisation needs torchao: pip install torchao") from e
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=qat))
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def quantize_int8(
    model: nn.Module,
    example: torch.Tensor,
    calibration: Iterable[Any],
    *,
    skip: Sequence[str] = (),
    max_batches: int = 8,
    train: Callable[[nn.Module], object] | None = None,
) -> QuantizedModel:
    """Quantise a copy of ``model`` to int8 (CPU, static, per-channel weights).

    Args:
        model: the float model (left untouched; pruning masks are folded in).
        example: one input batch, used to export the graph.
        calibration: batches (tensors or ``(x, y)`` pairs) observed to set activation ranges.
        skip: names of conv/linear layers kept in floating point (mixed precision).
        max_batches: calibration batches used.
        train: quantisation-aware training instead of post-training: called once on the
            fake-quantised model (e.g. a short fine-tune) between calibration and conversion.
    """
    with torchao_quietly():
        from torchao.quantization.pt2e.quantize_pt2e import (
            convert_pt2e,
            prepare_pt2e,
            prepare_qat_pt2e,
        )

    if example.shape[0] < 2:  # a batch of 1 would be specialised, not exported as dynamic
        example = torch.cat([example, example])
    float_model = _unshare_activations(folded_copy(model)).train(train is not None)
    weighted = [
        n
        for n, m in float_model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    unknown = [s for s in skip if s not in weighted]
    if unknown:
        raise ConfigError(f"cannot keep {unknown[0]} in float: it is not a conv/linear layer")
    try:
        exported = torch.export.export(float_model, (example,), dynamic_shapes=_BATCH).module()
    except Exception as e:
        raise ConfigError(f"torch.export could not capture the model for int8 ({e})") from e
    if train is None:
        prepared = _allow_eval(prepare_pt2e(exported, _quantizer(skip)))
    else:
        prepared = _allow_eval(prepare_qat_pt2e(exported, _quantizer(skip, qat=True)))
    with torch.no_grad():
        for i, batch in enumerate(calibration):
            if i >= max_batches:
                break
            prepared(batch[0] if isinstance(batch, (tuple, list)) else batch)
    if train is not None:
        train(prepared.train())
    converted = _allow_eval(convert_pt2e(prepared.eval())).eval()
    int8 = [n for n in weighted if n not in skip]
    return QuantizedModel(converted, int8, list(skip), list(example.shape))


def quantize_int8_linear(model: nn.Module, *, skip: Sequence[str] = ()) -> QuantizedModel:
    """torchao's maintained int8 path for GPUs (also runs on CPU), in place: dynamic int8
    activations × int8 per-channel weights for ``nn.Linear`` layers.

    torchao has no int8 convolution, so convolutions stay in the model's float dtype and are
    listed in ``float_layers`` — for a CNN this quantises little (say so before measuring).
    Cast the model to its deployment dtype and device first. Not saved by
    :func:`save_quantized`: apply it at deployment.
    """
    try:
        with torchao_quietly():
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        raise ConfigError("int8 on CUDA needs torchao: pip install torchao") from e
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    chosen = set(linear)
    quantize_(
        model,
        Int8DynamicActivationInt8WeightConfig(),
        filter_fn=lambda module, fqn: fqn in chosen,
    )
    float_layers = [*convs, *(n for n in skip if n not in convs)]
    return QuantizedModel(model, linear, float_layers)


def save_quantized(q: QuantizedModel, directory: str | os.PathLike[str]) -> Path:
    """Write ``model.pt2`` (exported program) and ``quant.json`` atomically. The co-design
    pipeline (pipeline/int8.py) writes the float twin beside it (``plan.json`` carrying the
    mixed-precision plan, ``model.safetensors``): it prices the int8 model in the energy model
    and is its latency baseline in ``measure``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    example = example_input(q.module, q.example_shape)
    program = torch.export.export(q.module, (example,), dynamic_shapes=_BATCH)
    with atomic_path(out / "model.pt2") as tmp:
        torch.export.save(program, str(tmp))
    meta = {
        "int8_layers": q.int8_layers,
        "float_layers": q.float_layers,
        "example_shape": q.example_shape,
        "format": "torch.export program (.pt2)",
    }
    atomic_write_text(out / "quant.json", json.dumps(meta, indent=2) + "\n")
    return out


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """``torch.export.load`` falls back to full unpickling for objects it cannot read as
    weights; an int8 program holds plain tensors only, so inside this block every ``torch.load``
    is ``weights_only=True`` and raw unpickling raises: a tampered file fails instead of running
    code."""
    import torch.export.pt2_archive._package as package

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError("model.pt2 holds pickled objects; refusing to unpickle them")

    real_load = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    saved = (torch.load, getattr(package, "pickle", None), torch._C._pickle_load_obj)
    guarded_pickle = types.SimpleNamespace(loads=refuse, load=refuse)
    torch.load = load
    if saved[1] is not None:
        package.pickle = guarded_pickle
    torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load = saved[0]
        if saved[1] is not None:
            package.pickle = saved[1]
        torch._C._pickle_load_obj = saved[2]


def load_quantized(directory: str | os.PathLike[str]) -> QuantizedModel:
    """Load what :func:`save_quantized` wrote."""
    folder = Path(directory)
    if not (folder / "model.pt2").is_file() or not (folder / "quant.json").is_file():
        raise ConfigError(f"{folder} holds no quantised model (model.pt2 + quant.json)")
    try:
        meta = json.loads(read_text(folder / "quant.json", "int8 metadata"))
        meta = {k: meta[k] for k in ("int8_layers", "float_layers", "example_shape")}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{folder / 'quant.json'} is damaged ({type(e).__name__}: {first_line(e)}): "
            "quantise the model again"
        ) from None
    try:
        # registers the quantized_decomposed ops *and* Inductor's x86 int8 fusion passes: without
        # the passes a compiled int8 program runs dequantize + fp32 kernels (3x slower here)
        with torchao_quietly():
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    except ImportError as e:
        raise ConfigError("loading an int8 model needs torchao: pip install torchao") from e
    try:
        with _weights_only():
            program = torch.export.load(str(folder / "model.pt2"))
    except (RuntimeError, ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"{folder / 'model.pt2'} is damaged ({type(e).__name__}: {first_line(e)}): "
            "quantise the model again"
        ) from None
    return QuantizedModel(
        _allow_eval(program.module()),
        meta["int8_layers"],
        meta["float_layers"],
        meta["example_shape"],
    )
