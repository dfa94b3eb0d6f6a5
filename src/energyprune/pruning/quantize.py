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

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.files import atomic_path, atomic_write_text
from energyprune.pruning.sparse import folded_copy

__all__ = ["QuantizedModel", "load_quantized", "quantize_int8", "save_quantized"]

_BATCH = ({0: torch.export.Dim("batch", min=1)},)  # any batch size


class _ReLU(nn.Module):
    """Functional ReLU: a module called twice (torchvision's and our BasicBlock reuse one) makes
    the quantizer's fusion partitions ambiguous; one functional call per use does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _unshare_activations(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.ReLU:
                setattr(module, name, _ReLU())
    return model


def _allow_eval(module: nn.Module) -> nn.Module:
    """Exported modules refuse ``.eval()``; the rest of the pipeline calls it everywhere."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    return allow_exported_model_train_eval(module)


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


def _quantizer(skip: Sequence[str]):
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    except ImportError as e:
        raise ConfigError("int8 quantisation needs torchao: pip install torchao") from e
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
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
) -> QuantizedModel:
    """Quantise a copy of ``model`` to int8 (CPU, static, per-channel weights).

    Args:
        model: the float model (left untouched; pruning masks are folded in).
        example: one input batch, used to export the graph.
        calibration: batches (tensors or ``(x, y)`` pairs) observed to set activation ranges.
        skip: names of conv/linear layers kept in floating point (mixed precision).
        max_batches: calibration batches used.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    float_model = _unshare_activations(folded_copy(model)).eval()
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
    prepared = prepare_pt2e(exported, _quantizer(skip))
    with torch.no_grad():
        for i, batch in enumerate(calibration):
            if i >= max_batches:
                break
            prepared(batch[0] if isinstance(batch, (tuple, list)) else batch)
    converted = _allow_eval(convert_pt2e(prepared))
    int8 = [n for n in weighted if n not in skip]
    return QuantizedModel(converted, int8, list(skip), list(example.shape))


def save_quantized(q: QuantizedModel, directory: str | os.PathLike[str]) -> Path:
    """Write ``model.pt2`` (exported program) and ``quant.json`` atomically."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    example = torch.randn(*q.example_shape)
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


def load_quantized(directory: str | os.PathLike[str]) -> QuantizedModel:
    """Load what :func:`save_quantized` wrote."""
    folder = Path(directory)
    if not (folder / "model.pt2").is_file() or not (folder / "quant.json").is_file():
        raise ConfigError(f"{folder} holds no quantised model (model.pt2 + quant.json)")
    meta = json.loads((folder / "quant.json").read_text(encoding="utf-8"))
    program = torch.export.load(str(folder / "model.pt2"))
    return QuantizedModel(
        _allow_eval(program.module()),
        meta["int8_layers"],
        meta["float_layers"],
        meta["example_shape"],
    )
