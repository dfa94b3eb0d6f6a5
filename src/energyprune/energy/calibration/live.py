"""Calibration: fit a hardware profile's coefficients to measured energy of designed variants.

MAC counts mislead on GPUs (shared/ANCHORS.md: "fewer MACs" predicted "less energy" in only 77 %
of variant pairs). We measure a designed set of variants — conv and linear stacks over a grid of
widths including non-multiples of 8 and 16, several batch sizes and dtypes, and whole models —
and fit the profile's per-feature costs (MACs by dtype, MACs at unaligned widths, bytes per
memory level, kernel launches; :mod:`energyprune.energy.pricing.features`) by non-negative least
squares on relative error. Fidelity is reported on held-out variants: pairwise ordering agreement
(within pairs of the same batch size and dtype) and MAPE, beside the same figures for plain MACs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

from energyprune.energy.calibration.fidelity import fidelity, n_close_pairs
from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.energy.pricing.features import variant_features
from energyprune.errors import ConfigError
from energyprune.models.layers import TORCH_DTYPES
from energyprune.models.placement import example_input

__all__ = [
    "CalibrationResult",
    "Observation",
    "Variant",
    "calibrate",
    "design_variants",
    "fit_observations",
    "fit_profile",
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


def solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
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
    pj = solve(x, joules / 1e-12)
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
    """The fitted profile and its fidelity on held-out rows."""

    profile: HardwareProfile
    report: dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """One measured configuration, traced: what every fit (live or from a file) consumes.

    ``features`` and ``macs`` are per sample; ``joules`` is the measured J/sample; ``group``
    names what it may be compared with (same device, batch size and dtype).
    """

    name: str
    group: str
    features: Counter[str]
    macs: float
    joules: float
    batch_size: int
    dtype: str


def _default_measure(device: str, seconds: float, windows: int) -> tuple[MeasureFn, str]:
    """The measurement protocol on the device's meter, and what it reads (for the profile)."""
    from energyprune.energy.measurement.meters import open_meter
    from energyprune.energy.measurement.protocol import MeasurementProtocol, measure

    meter = open_meter(device)  # raises MeterUnavailableError with the reason
    protocol = MeasurementProtocol(min_window_s=seconds, windows=windows, warmup_s=0.3, idle_s=0.0)

    def run(model: nn.Module, example: torch.Tensor, variant: Variant) -> float:
        m = measure(model, example, device=device, meter=meter, protocol=protocol)
        return m.joules_per_sample["median"]

    return run, f"the {meter.backend} energy counter, gross"


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
    check_fraction(heldout_fraction)
    hw = load_hardware(base)
    variants = list(variants if variants is not None else design_variants(device, quick))
    measured_with = "a caller-supplied measure_fn"
    if measure_fn is None:
        measure_fn, measured_with = _default_measure(device, seconds, windows)
    observations = _observe(variants, hw, device, measure_fn, progress)
    return fit_observations(
        hw,
        observations,
        name or f"calibrated-{device.split(':')[0]}",
        heldout_fraction,
        seed,
        device=_device_name(device),
        measured_with=f"{len(variants)} designed variants measured with {measured_with}",
    )


def check_fraction(heldout_fraction: float) -> None:
    if not 0 < heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")


def _observe(variants, hw, device, measure_fn, progress) -> list[Observation]:
    """Every variant traced once and measured once."""
    observations = []
    for i, variant in enumerate(variants):
        progress(i, len(variants), variant.name)
        dtype = TORCH_DTYPES[variant.dtype]
        model = variant.factory().eval().to(device, dtype)
        example = example_input(model, variant.input_shape)
        f, m = variant_features(model, example, hw)
        joules = measure_fn(model, example, variant)
        if joules <= 0:
            raise ConfigError(
                f"calibration variant {variant.name} measured {joules} J/sample; check the meter"
            )
        observations.append(
            Observation(
                variant.name, variant.group, f, m, joules, variant.batch_size, variant.dtype
            )
        )
    progress(len(variants), len(variants), "fit")
    return observations


def fit_observations(
    base: HardwareProfile,
    observations: Sequence[Observation],
    name: str,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    *,
    device: str,
    measured_with: str,
    quantity: str = "joules per sample",
    **context: Any,
) -> CalibrationResult:
    """Fit ``base``'s coefficients to the training share of ``observations`` and report
    fidelity on the held-out share: the one fit path of live and file calibration.

    ``device``, ``measured_with`` and ``quantity`` say what was measured (the profile YAML cites
    them); further ``context`` goes into the report only. The fitted profile carries the
    headline figures in ``calibration``.
    """
    check_fraction(heldout_fraction)
    if len(observations) < 4:
        raise ConfigError(
            f"calibration needs at least 4 measured rows, got {len(observations)}; measure more "
            "configurations"
        )
    held, train = holdout(len(observations), heldout_fraction, seed)
    y = np.array([o.joules for o in observations])
    feats = [o.features for o in observations]
    fitted, kept = fit_profile(base, [feats[i] for i in train], y[train], name)
    report = fidelity_report(
        observations, _predict(feats, fitted), _predict(feats, base), held, train
    )
    report.update(
        base_profile=base.name,
        not_calibrated=kept,
        device=device,
        measured_with=measured_with,
        quantity=quantity,
        **context,
    )
    return CalibrationResult(replace(fitted, calibration=summary(report)), report)


def _predict(feats: Sequence[Counter[str]], hw: HardwareProfile) -> np.ndarray:
    coef = hw.coefficients()
    return np.array([sum(v * coef[k] for k, v in f.items()) * 1e-12 for f in feats])


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline fidelity figures a fitted profile carries (they travel in its YAML)."""
    keys = (
        "pairwise_agreement",
        "close_pair_agreement",
        "macs_pairwise_agreement",
        "macs_close_pair_agreement",
        "mape",
        "n_train",
        "n_heldout",
        "device",
        "date",
    )
    return {k: report[k] for k in keys}


def holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Held-out and training indices: a seeded shuffle, at least two held out."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = max(2, round(fraction * n))
    return sorted(order[:n_held]), sorted(order[n_held:])


def fidelity_report(observations, predicted, base_predicted, held, train) -> dict[str, Any]:
    """Held-out fidelity of the fit, of plain MACs and of the base profile, and every row."""
    y = np.array([o.joules for o in observations])
    macs = np.array([o.macs for o in observations], dtype=float)
    groups = np.array([o.group for o in observations])
    macs_scale = float(np.median(y[train] / np.maximum(macs[train], 1)))
    report: dict[str, Any] = {}
    predictors = {"": predicted, "macs_": macs_scale * macs, "base_": base_predicted}
    for prefix, values in predictors.items():
        figures = fidelity(values[held], y[held], macs[held], groups[held])
        report.update({prefix + k: v for k, v in figures.items()})
    train_figures = fidelity(predicted[train], y[train], macs[train], groups[train])
    report.update(
        train_pairwise_agreement=train_figures["pairwise_agreement"],
        n_train=len(train),
        n_heldout=len(held),
        n_close_pairs_heldout=n_close_pairs(macs[held], groups[held]),
        date=time.strftime("%Y-%m-%d"),
        variants=[
            {
                "name": o.name,
                "group": o.group,
                "batch_size": o.batch_size,
                "dtype": o.dtype,
                "heldout": i in held,
                "measured_j_per_sample": float(y[i]),
                "predicted_j_per_sample": float(predicted[i]),
                "macs_per_sample": int(macs[i]),
            }
            for i, o in enumerate(observations)
        ],
    )
    return report


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    from energyprune.energy.measurement.meters import cpu_name

    return cpu_name()
