"""Calibration: fit a hardware profile's coefficients to measured energy of designed variants.

MAC counts mislead on GPUs (shared/ANCHORS.md: "fewer MACs" predicted "less energy" in only 77 %
of variant pairs). We measure a designed set of variants — conv and linear stacks over a grid of
widths including non-multiples of 8 and 16, several batch sizes and dtypes, and whole models —
and fit the profile's per-feature costs (MACs by dtype, MACs at unaligned widths, bytes per
memory level, kernel launches; :mod:`energyprune.energy.features`) by non-negative least squares
on relative error. Fidelity is reported on held-out variants: pairwise ordering agreement (within
pairs of the same batch size and dtype) and MAPE, beside the same figures for plain MACs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np
import torch
import yaml
from scipy.optimize import nnls
from torch import nn

from energyprune.energy.features import op_features
from energyprune.energy.hardware import HardwareProfile, load_hardware
from energyprune.energy.trace import TORCH_DTYPES, trace
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text

__all__ = [
    "CalibrationResult",
    "Variant",
    "calibrate",
    "design_variants",
    "fit_profile",
    "pairwise_agreement",
    "profile_to_yaml",
    "write_calibration",
]

MeasureFn = Callable[[nn.Module, torch.Tensor, "Variant"], float]


@dataclass(frozen=True)
class Variant:
    """One calibration point: a model factory, a batch shape and a dtype."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    dtype: str = "fp32"

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    @property
    def group(self) -> str:
        """Variants are only compared with others of the same batch size and dtype."""
        return f"bs{self.batch_size}/{self.dtype}"


def conv_stack(width: int, depth: int = 4) -> nn.Module:
    """CIFAR-like conv-BN-ReLU stack of one width (the unit of channel pruning)."""
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(depth):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def mlp_stack(width: int, depth: int = 4) -> nn.Module:
    """Transformer-MLP-like stack of Linear + GELU of one width."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers)


def design_variants(device: str = "cuda", quick: bool = False) -> list[Variant]:
    """The designed calibration set for ``device`` (``quick`` = a smaller grid)."""
    from energyprune.models.zoo import BUILTIN_MODELS

    cuda = device.startswith("cuda")
    dtypes = (["fp16", "fp32"] if quick else ["fp16", "bf16", "fp32"]) if cuda else ["fp32"]
    conv_widths = [16, 30, 32, 60, 64] if quick else [16, 24, 30, 32, 40, 48, 60, 64, 96, 100, 128]
    mlp_widths = [256, 300, 512] if quick else [256, 300, 384, 500, 512, 768, 1000, 1024]
    batches = ([1, 256] if quick else [1, 64, 512]) if cuda else [1, 16]
    variants = []
    for dtype in dtypes:
        for bs in batches:
            variants += [
                Variant(f"conv{w}", lambda w=w: conv_stack(w), (bs, 3, 32, 32), dtype)
                for w in conv_widths
            ]
            variants += [
                Variant(name, factory, (bs, 3, 32, 32), dtype)
                for name, (factory, _) in BUILTIN_MODELS.items()
            ]
        for tokens in [64, 1024] if cuda else [16]:
            variants += [
                Variant(f"mlp{w}", lambda w=w: mlp_stack(w), (tokens, w), dtype) for w in mlp_widths
            ]
    return variants


def variant_features(
    model: nn.Module, example: torch.Tensor, hw: HardwareProfile
) -> tuple[Counter[str], int]:
    """Per-sample energy features and dense MACs of one forward pass, priced as traced."""
    with torch.no_grad():
        tr = trace(model, example)
    total: Counter[str] = Counter()
    for record in tr.records:
        total.update(op_features(record, hw, None).amounts)
    batch = example.shape[0]
    return Counter({k: v / batch for k, v in total.items()}), sum(
        r.macs for r in tr.records
    ) // batch


def pairwise_agreement(
    predicted: Sequence[float], measured: Sequence[float], groups: Sequence[str]
) -> float:
    """Fraction of same-group pairs that ``predicted`` orders like ``measured`` (ties: half)."""
    score, pairs = 0.0, 0
    for i, j in combinations(range(len(measured)), 2):
        if groups[i] != groups[j] or measured[i] == measured[j]:
            continue
        pairs += 1
        p = np.sign(predicted[i] - predicted[j])
        score += 0.5 if p == 0 else float(p == np.sign(measured[i] - measured[j]))
    return score / pairs if pairs else float("nan")


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured))


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error, with column scaling for conditioning."""
    rows = x / y[:, None]
    norms = np.linalg.norm(rows, axis=0)
    norms[norms == 0] = 1.0
    solution, _ = nnls(rows / norms, np.ones_like(y))
    return solution / norms


def fit_profile(
    base: HardwareProfile, features: list[Counter[str]], joules: np.ndarray, name: str
) -> tuple[HardwareProfile, list[str]]:
    """Fit ``base``'s coefficients to ``joules`` (J/sample); returns the profile and the names of
    the features it kept from ``base`` because the data did not exercise them."""
    coef_base = base.coefficients()
    columns = sorted({k for f in features for k, v in f.items() if v} & set(coef_base))
    x = np.array([[f.get(c, 0.0) for c in columns] for f in features])
    pj = _solve(x, joules / 1e-12)
    fitted = dict(zip(columns, pj.tolist(), strict=True))
    compute = {d: dict(row) for d, row in base.compute_pj.items()}
    memory = dict(base.memory_pj_per_byte)
    for feature, value in fitted.items():
        kind, _, key = feature.partition(":")
        if feature == "mac:unaligned" or feature == "launch":
            continue
        if kind in ("mac", "add"):
            compute[key][kind] = value
        elif kind == "bytes":
            memory[key] = value
    profile = replace(
        base,
        name=name,
        compute_pj=compute,
        memory_pj_per_byte=memory,
        launch_pj=fitted.get("launch", base.launch_pj),
        unaligned_mac_pj=fitted.get("mac:unaligned", base.unaligned_mac_pj),
    )
    return profile, sorted(set(coef_base) - set(columns))


@dataclass(frozen=True)
class CalibrationResult:
    """The fitted profile and its fidelity on held-out variants."""

    profile: HardwareProfile
    report: dict[str, Any]


def _default_measure(device: str, seconds: float, windows: int) -> MeasureFn:
    from energyprune.energy.measure import Protocol, measure
    from energyprune.energy.meter import open_meter

    meter = open_meter(device)  # raises MeterUnavailableError with the reason
    protocol = Protocol(min_window_s=seconds, windows=windows, warmup_s=0.3, idle_s=0.0)

    def run(model: nn.Module, example: torch.Tensor, variant: Variant) -> float:
        m = measure(model, example, device=device, meter=meter, protocol=protocol)
        return m.joules_per_sample["median"]

    return run


def calibrate(
    device: str = "cuda",
    *,
    base: str | HardwareProfile = "gpu-generic",
    name: str | None = None,
    variants: Sequence[Variant] | None = None,
    quick: bool = False,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    seconds: float = 0.5,
    windows: int = 3,
    measure_fn: MeasureFn | None = None,
    progress: Callable[[int, int, str], None] = lambda done, total, name: None,
) -> CalibrationResult:
    """Measure the designed variants on ``device`` and fit a profile to them.

    Args:
        device: ``cuda``/``cuda:N``/``cpu``; variants run there in their dtype.
        base: profile whose structure (levels, buffer size, alignment) is kept and whose
            coefficients are refitted; features the variants never exercise keep its values.
        variants: calibration set (default :func:`design_variants`).
        heldout_fraction: share of variants kept out of the fit to report fidelity.
        measure_fn: ``(model, example, variant) -> J/sample``; default = the measurement
            protocol with the device's meter (raises ``MeterUnavailableError`` without one).

    Returns:
        :class:`CalibrationResult` with the fitted profile and its fidelity report.
    """
    if not 0 < heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    hw = load_hardware(base)
    variants = list(variants if variants is not None else design_variants(device, quick))
    measure_fn = measure_fn or _default_measure(device, seconds, windows)
    feats, macs, y = _observe(variants, hw, device, measure_fn, progress)
    held, train = _holdout(len(variants), heldout_fraction, seed)
    fitted, kept = fit_profile(
        hw, [feats[i] for i in train], y[train], name or f"calibrated-{device.split(':')[0]}"
    )
    coef = fitted.coefficients()
    predicted = np.array([sum(v * coef[k] for k, v in f.items()) * 1e-12 for f in feats])
    report = _report(variants, y, predicted, np.array(macs, dtype=float), held, train)
    report.update(device=_device_name(device), base_profile=hw.name, not_calibrated=kept)
    keys = ("pairwise_agreement", "macs_pairwise_agreement", "mape", "n_train", "n_heldout")
    summary = {k: report[k] for k in (*keys, "device", "date")}
    fitted = replace(fitted, calibration=summary)
    return CalibrationResult(fitted, report)


def _observe(variants, hw, device, measure_fn, progress) -> tuple[list, list, np.ndarray]:
    """Features, MACs and measured joules per sample of every variant (traced once each)."""
    feats, macs, joules = [], [], []
    for i, variant in enumerate(variants):
        progress(i, len(variants), variant.name)
        dtype = TORCH_DTYPES[variant.dtype]
        model = variant.factory().eval().to(device, dtype)
        example = torch.randn(*variant.input_shape, device=device, dtype=dtype)
        f, m = variant_features(model, example, hw)
        feats.append(f)
        macs.append(m)
        joules.append(measure_fn(model, example, variant))
    progress(len(variants), len(variants), "fit")
    y = np.array(joules)
    if (y <= 0).any():
        raise ConfigError("a calibration variant measured <= 0 J per sample; check the meter")
    return feats, macs, y


def _holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Held-out and training indices: a seeded shuffle, at least two held out."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = max(2, round(fraction * n))
    return sorted(order[:n_held]), sorted(order[n_held:])


def _report(variants, y, predicted, macs, held, train) -> dict[str, Any]:
    """Held-out agreement and error of the fit and of plain MACs, and every variant's row."""
    macs_scale = float(np.median(y[train] / np.maximum(macs[train], 1)))
    groups = np.array([v.group for v in variants])
    return {
        "pairwise_agreement": pairwise_agreement(predicted[held], y[held], groups[held]),
        "macs_pairwise_agreement": pairwise_agreement(macs[held], y[held], groups[held]),
        "mape": _mape(predicted[held], y[held]),
        "macs_mape": _mape(macs_scale * macs[held], y[held]),
        "train_pairwise_agreement": pairwise_agreement(predicted[train], y[train], groups[train]),
        "n_train": len(train),
        "n_heldout": len(held),
        "date": time.strftime("%Y-%m-%d"),
        "variants": [
            {
                "name": v.name,
                "batch_size": v.batch_size,
                "dtype": v.dtype,
                "heldout": i in held,
                "measured_j_per_sample": float(y[i]),
                "predicted_j_per_sample": float(predicted[i]),
                "macs_per_sample": int(macs[i]),
            }
            for i, v in enumerate(variants)
        ],
    }


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    from energyprune.energy.meter import cpu_name

    return cpu_name()


def profile_to_yaml(result: CalibrationResult, meter_backend: str = "meter") -> str:
    """The fitted profile as a YAML hardware-profile file (citing how it was made)."""
    hw, rep = result.profile, result.report
    data = {
        "name": hw.name,
        "description": (
            f"Calibrated on {rep['device']} ({rep['date']}) by `energyprune calibrate` from "
            f"{rep['n_train']} measured variants; gross joules per sample."
        ),
        "sources": [
            f"energyprune calibrate: {rep['n_train'] + rep['n_heldout']} variants measured with "
            f"the {meter_backend} energy counter on {rep['device']}, {rep['date']}",
            f"structure and uncalibrated coefficients from {rep['base_profile']}",
        ],
        "assumptions": [
            "Fitted by non-negative least squares on relative error of J/sample.",
            f"Kept from {rep['base_profile']} (not exercised): {', '.join(rep['not_calibrated'])}",
        ],
        "compute_pj": hw.compute_pj,
        "memory_pj_per_byte": hw.memory_pj_per_byte,
        "buffer_bytes": hw.buffer_bytes,
        "accesses_per_mac": hw.accesses_per_mac,
        "zero_skipping": hw.zero_skipping,
        "channel_multiple": hw.channel_multiple,
        "launch_pj": hw.launch_pj,
        "unaligned_mac_pj": hw.unaligned_mac_pj,
        "calibration": hw.calibration,
    }
    return yaml.safe_dump(data, sort_keys=False, width=100)


def write_calibration(
    result: CalibrationResult, out: str, report_path: str | None, meter_backend: str = "meter"
) -> None:
    """Write the profile YAML (and the fidelity JSON) atomically."""
    import json

    atomic_write_text(out, profile_to_yaml(result, meter_backend))
    if report_path:
        atomic_write_text(report_path, json.dumps(result.report, indent=2) + "\n")
