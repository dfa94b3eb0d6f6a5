"""int8 after pruning, with an accuracy guardrail: the shared step of `quantize` and
`prune --quantize int8`, and the fp32-vs-int8 measurement that decides whether int8 is worth
deploying. Decisions use the validation split; the test split is reported."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.deploy.quantize import QuantizedModel, quantize_int8, save_quantized
from energyprune.energy.measurement.noise import TOO_NOISY
from energyprune.energy.measurement.protocol import MeasurementProtocol, measure
from energyprune.energy.pricing.estimates import profile
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.options import build
from energyprune.pipeline.data import Data
from energyprune.pipeline.evaluate import top1
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pruning.export import save_model
from energyprune.pruning.plan import PruningPlan

__all__ = [
    "QAT",
    "Int8Settings",
    "compare_int8",
    "int8_mac_share",
    "int8_verdict",
    "int8_with_guardrail",
    "save_int8",
]

QAT = TrainConfig(epochs=1, lr=1e-4, optimizer="adamw", max_batches=100)
"""The short quantisation-aware fine-tune tried when post-training int8 fails the guardrail."""


def _most_sensitive(model, example, data: Data, layers, skip, batches: int) -> str:
    """The layer whose int8 alone costs the most validation accuracy."""
    drops = {}
    for name in (n for n in layers if n not in skip):
        alone = quantize_int8(
            model, example, data.val, skip=[n for n in layers if n != name], max_batches=batches
        )
        drops[name] = -top1(alone.module, data.val, data.num_classes)
    return max(drops, key=drops.get)


def compare_int8(
    fp32: nn.Module,
    int8: QuantizedModel,
    example: torch.Tensor,
    *,
    hardware: str = "horowitz-45nm",
    compile: bool = True,
    protocol: MeasurementProtocol = MeasurementProtocol(),
    meter: Any = "auto",
) -> dict[str, Any]:
    """Measure the float model and its int8 twin the same way on CPU (latency always; energy
    where a meter exists, otherwise the labelled estimates) and say whether int8 is worth it:
    it is recommended only when it measures neither slower nor costlier than float."""
    estimates = {
        "fp32": profile(fp32, example, hardware),
        "int8": profile(fp32, example, hardware, layer_dtypes=int8.layer_dtypes),
    }
    runs = {
        label: measure(
            module,
            example,
            device="cpu",
            meter=meter,
            compile=compile,
            protocol=protocol,
            hardware=hardware,
            estimated=estimates[label],
        )
        for label, module in (("fp32", fp32), ("int8", int8.module))
    }
    p50 = {k: m.latency_ms["p50"] for k, m in runs.items()}
    energy = None
    if all(m.measured for m in runs.values()):
        energy = {k: m.joules_per_sample["median"] for k, m in runs.items()}
    mode = "torch.compile (Inductor, freezing)" if compile else "eager"
    noisy = next((f"{k}: {m.noisy}" for k, m in runs.items() if m.noisy), None)
    recommended, verdict = int8_verdict(
        p50, energy, f"{mode}, batch {example.shape[0]}", noisy=noisy
    )
    return {
        "fp32": runs["fp32"].to_dict(),
        "int8": runs["int8"].to_dict(),
        "mode": mode,
        "latency_p50_ms": p50,
        "speedup": p50["fp32"] / p50["int8"],
        "measured_joules_per_sample": energy,
        "recommended": recommended,
        "verdict": verdict,
    }


def int8_verdict(
    p50_ms: dict[str, float],
    joules: dict[str, float] | None,
    setting: str,
    baseline: str = "fp32",
    noisy: str | None = None,
) -> tuple[bool | None, str]:
    """Recommend int8 only when it measures neither slower nor (where metered) costlier than
    the float ``baseline`` (the dicts' other key). A ``noisy`` reading (its reason) judges
    nothing: the recommendation is None and the verdict says so."""
    speedup = p50_ms[baseline] / p50_ms["int8"]
    text = f"int8 runs at {speedup:.2f}× the speed of {baseline} ({setting})"
    if joules is not None:
        text += f" and uses {joules['int8'] / joules[baseline]:.2f}× its measured energy per sample"
    else:
        text += "; energy not measured (no meter), only estimated"
    if noisy:
        return None, f"{text} — {TOO_NOISY} ({noisy})"
    problems = [
        word
        for word, bad in (
            ("slower", speedup < 1.0),
            ("costlier", joules is not None and joules["int8"] > joules[baseline]),
        )
        if bad
    ]
    if problems:
        return False, text + f" — int8 measures {' and '.join(problems)}: not recommended"
    return True, text + " — int8 recommended"


def int8_mac_share(model: nn.Module, example: torch.Tensor, layers: list[str]) -> float:
    """Share of the model's MACs in ``layers`` — how much an int8 path covers (torchao's GPU
    int8 covers Linear layers only: for a CNN, next to nothing)."""
    prof = profile(model, example)
    return sum(layer.macs for layer in prof.layers if layer.name in layers) / prof.total.macs


@dataclass(frozen=True)
class Int8Settings:
    """How int8 is reached and judged: the profile that prices it, the guardrail (points of
    validation top-1), calibration batches, the quantisation-aware fine-tune tried when
    post-training int8 fails (None skips it), whether latency is measured compiled, the
    measurement protocol and the batch both models are measured at."""

    hardware: str = "horowitz-45nm"
    max_acc_drop: float = 0.5
    calibration_batches: int = 8
    qat: TrainConfig | None = QAT
    compile: bool = True
    protocol: MeasurementProtocol = MeasurementProtocol()
    measure_batch: int = 1


def int8_with_guardrail(
    model: nn.Module, data: Data, name: str, **settings: Any
) -> tuple[QuantizedModel, dict[str, Any]]:
    """Quantise to int8 and keep validation top-1 within ``max_acc_drop`` points.

    Post-training int8 first; when that fails the guardrail, a short quantisation-aware
    fine-tune (``qat``); when that fails too, post-training int8 again with the most sensitive
    layers kept in float, one at a time. ``settings`` are the fields of
    :class:`Int8Settings`. Returns the model and a report: accuracy, estimated energy (int8
    layers priced as int8), measured CPU latency (and energy where a meter exists) of both at
    batch ``measure_batch``, and whether int8 is recommended.

    Raises:
        ConfigError: the guardrail fails even with only one layer left in int8.
    """
    how = build(Int8Settings, **settings)
    hardware, max_acc_drop, protocol = how.hardware, how.max_acc_drop, how.protocol
    model.eval()
    example = example_input(model, (4, *data.input_shape[1:]))
    float_val = top1(model, data.val, data.num_classes)

    def passes(q: QuantizedModel) -> tuple[bool, float]:
        acc = top1(q.module, data.val, data.num_classes)
        return 100 * (float_val - acc) <= max_acc_drop, acc

    q, method, ok, int8_val, skipped = _within(
        model, example, data, passes, how.qat, how.calibration_batches
    )
    if not ok:
        raise ConfigError(
            f"int8 loses {100 * (float_val - int8_val):.2f} pt of validation top-1 even with "
            f"{skipped} layers in float (guardrail {max_acc_drop} pt): keep fp32"
        )
    test = None
    if data.test is not None:
        test = {
            "fp32": top1(model, data.test, data.num_classes),
            "int8": top1(q.module, data.test, data.num_classes),
        }
    x = example_input(model, (how.measure_batch, *data.input_shape[1:]))
    measured = compare_int8(model, q, x, hardware=hardware, compile=how.compile, protocol=protocol)
    # energy per forward of one sample, as the pipeline's
    one = example_input(model, data.input_shape)
    fp32 = profile(model, one, hardware, name=name)
    int8 = profile(model, one, hardware, name=name, layer_dtypes=q.layer_dtypes)
    report = {
        "model": name,
        "method": method,
        "float_layers": q.float_layers,
        "int8_layers": q.int8_layers,
        "val_top1": {"fp32": float_val, "int8": int8_val},
        "validation": data.val_source,
        "test_top1": test,
        "estimated_energy_j": {
            "fp32": fp32.total.energy_j,
            "int8": int8.total.energy_j,
            "hardware": fp32.hardware,
        },
        "measurement": measured,
        "recommended": measured["recommended"],
    }
    return q, report


def _within(model, example, data: Data, passes, qat, batches: int):
    """The first int8 model that ``passes``: post-training, then quantisation-aware, then
    post-training with the most sensitive layers kept in float one at a time. Returns it, how it
    was made, whether it passes, its validation top-1 and how many layers stayed in float."""
    skip: list[str] = []
    method = "post-training"
    q = quantize_int8(model, example, data.val, max_batches=batches)
    ok, int8_val = passes(q)
    if not ok and qat is not None:
        train = lambda fq: finetune(fq, data.train, qat)  # noqa: E731
        trial = quantize_int8(model, example, data.train, max_batches=batches, train=train)
        trial_ok, trial_val = passes(trial)
        if trial_ok or trial_val > int8_val:
            q, ok, int8_val, method = trial, trial_ok, trial_val, "quantisation-aware"
    while not ok and len(q.int8_layers) > 1:
        layers = q.int8_layers + skip
        skip.append(_most_sensitive(model, example, data, layers, skip, batches))
        q = quantize_int8(model, example, data.val, skip=skip, max_batches=batches)
        method = "post-training, mixed precision"
        ok, int8_val = passes(q)
    return q, method, ok, int8_val, len(skip)


def save_int8(
    q: QuantizedModel, report: dict[str, Any], model: nn.Module, plan: PruningPlan, out
) -> Path:
    """The int8 folder: model.pt2 + quant.json, the float twin (plan.json with the
    mixed-precision plan, model.safetensors) and quant_report.json."""
    save_model(model, replace(plan, precision=q.layer_dtypes), out)
    save_quantized(q, out)
    atomic_write_text(Path(out) / "quant_report.json", json.dumps(report, indent=2) + "\n")
    return Path(out)
