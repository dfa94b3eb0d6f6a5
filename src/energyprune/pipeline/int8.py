"""int8 after pruning, with an accuracy guardrail: the shared step of `quantize` and
`prune --quantize int8`. Decisions use the validation split; the test split is reported."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from energyprune.energy.model import profile
from energyprune.errors import ConfigError
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import median_latency_ms, top1
from energyprune.pruning.quantize import QuantizedModel, quantize_int8

__all__ = ["int8_with_guardrail"]


def _most_sensitive(model, example, data: Data, layers, skip, batches: int) -> str:
    """The layer whose int8 alone costs the most validation accuracy."""
    drops = {}
    for name in (n for n in layers if n not in skip):
        alone = quantize_int8(
            model, example, data.val, skip=[n for n in layers if n != name], max_batches=batches
        )
        drops[name] = -top1(alone.module, data.val, data.num_classes)
    return max(drops, key=drops.get)


def int8_with_guardrail(
    model: nn.Module,
    data: Data,
    name: str,
    *,
    hardware: str = "horowitz-45nm",
    max_acc_drop: float = 0.5,
    calibration_batches: int = 8,
) -> tuple[QuantizedModel, dict[str, Any]]:
    """Quantise to int8; while validation top-1 drops more than ``max_acc_drop`` points, keep
    the most sensitive layer in float. Returns the model and a report (accuracy, estimated
    energy with int8 layers priced as int8, measured CPU latency).

    Raises:
        ConfigError: the guardrail fails even with every layer but none quantised.
    """
    model.eval()
    example = torch.randn(4, *data.input_shape[1:])
    float_val = top1(model, data.val, data.num_classes)
    skip: list[str] = []
    q = quantize_int8(model, example, data.val, max_batches=calibration_batches)
    int8_val = top1(q.module, data.val, data.num_classes)
    while 100 * (float_val - int8_val) > max_acc_drop and len(q.int8_layers) > 1:
        skip.append(
            _most_sensitive(model, example, data, q.int8_layers + skip, skip, calibration_batches)
        )
        q = quantize_int8(model, example, data.val, skip=skip, max_batches=calibration_batches)
        int8_val = top1(q.module, data.val, data.num_classes)
    if 100 * (float_val - int8_val) > max_acc_drop:
        raise ConfigError(
            f"int8 loses {100 * (float_val - int8_val):.2f} pt of validation top-1 even with "
            f"{len(skip)} layers in float (guardrail {max_acc_drop} pt): keep fp32"
        )
    x1 = torch.randn(*data.input_shape)
    fp32 = profile(model, x1, hardware, name=name)
    int8 = profile(model, x1, hardware, name=name, layer_dtypes=q.layer_dtypes)
    test = None
    if data.test is not None:
        test = {
            "fp32": top1(model, data.test, data.num_classes),
            "int8": top1(q.module, data.test, data.num_classes),
        }
    latency = {
        "fp32": median_latency_ms(model, x1),
        "int8": median_latency_ms(q.module, x1),
        "note": "eager int8 runs reference (quantize/dequantize) kernels; int8 kernels "
        "need torch.compile",
    }
    report = {
        "model": name,
        "float_layers": skip,
        "int8_layers": q.int8_layers,
        "val_top1": {"fp32": float_val, "int8": int8_val},
        "test_top1": test,
        "estimated_energy_j": {
            "fp32": fp32.total.energy_j,
            "int8": int8.total.energy_j,
            "hardware": fp32.hardware,
        },
        "latency_ms_cpu_eager": latency,
        "recommended": latency["int8"] < latency["fp32"],
    }
    return q, report
