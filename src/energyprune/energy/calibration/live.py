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

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from energyprune.energy.calibration.fit import (
    EnergySolve,
    FitSpec,
    energy_columns,
    fit_energy,
    write_back,
)
from energyprune.energy.calibration.observations import CalibrationResult, Observation
from energyprune.energy.calibration.report import (
    fidelity_report,
    on_both_splits,
    split_report,
    summary,
)
from energyprune.energy.calibration.split import split
from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.energy.pricing.features import variant_features
from energyprune.errors import ConfigError
from energyprune.models.layers import TORCH_DTYPES
from energyprune.models.placement import example_input
from energyprune.options import build

if TYPE_CHECKING:
    from energyprune.energy.measurement.protocol import MeasurementProtocol

__all__ = [
    "CalibrationResult",
    "Observation",
    "Variant",
    "calibrate",
    "design_variants",
    "fit_observations",
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


def _default_measure(device: str, protocol: MeasurementProtocol | None) -> tuple[MeasureFn, str]:
    """The measurement protocol on the device's meter, and what it reads (for the profile)."""
    from energyprune.energy.measurement.meters import open_meter
    from energyprune.energy.measurement.protocol import MeasurementProtocol, measure

    meter = open_meter(device)  # raises MeterUnavailableError with the reason
    protocol = protocol or MeasurementProtocol(
        min_window_s=0.5, windows=3, warmup_s=0.3, idle_s=0.0
    )

    def run(model: nn.Module, example: torch.Tensor, variant: Variant) -> float:
        m = measure(model, example, device=device, meter=meter, protocol=protocol)
        return m.joules_per_sample["median"]

    return run, f"the {meter.backend} energy counter, gross"


def calibrate(
    device: str = "cuda",
    *,
    base: str | HardwareProfile = "gpu-generic",
    variants: Sequence[Variant] | None = None,
    quick: bool = False,
    protocol: MeasurementProtocol | None = None,
    measure_fn: MeasureFn | None = None,
    progress: Callable[[int, int, str], None] = lambda done, total, name: None,
    **settings: Any,
) -> CalibrationResult:
    """Measure the designed variants on ``device`` and fit a profile to them.

    Args:
        device: ``cuda``/``cuda:N``/``cpu``; variants run there in their dtype.
        base: profile whose structure (levels, buffer size, alignment) is kept and whose
            coefficients are refitted; features the variants never exercise keep its values.
        variants: calibration set (default :func:`design_variants`).
        protocol: how each variant is measured (default: 3 windows of >= 0.5 s, no idle).
        measure_fn: ``(model, example, variant) -> J/sample``; default = the measurement
            protocol with the device's meter (raises ``MeterUnavailableError`` without one).
        settings: the fields of :class:`~energyprune.energy.calibration.fit.FitSpec`
            (``heldout_fraction``, ``seed``, ``split``, ``energy_factor``, ``shrink``, ``name``).

    Returns:
        :class:`CalibrationResult` with the fitted profile and its fidelity report.
    """
    spec = build(FitSpec, **settings)
    spec = replace(spec, name=spec.name or f"calibrated-{device.split(':')[0]}")
    hw = load_hardware(base)
    variants = list(variants if variants is not None else design_variants(device, quick))
    measured_with = "a caller-supplied measure_fn"
    if measure_fn is None:
        measure_fn, measured_with = _default_measure(device, protocol)
    observations = _observe(variants, hw, device, measure_fn, progress)
    return fit_observations(
        hw,
        observations,
        spec,
        device=_device_name(device),
        measured_with=f"{len(variants)} designed variants measured with {measured_with}",
    )


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


def _fit_linear(
    base: HardwareProfile,
    observations: Sequence[Observation],
    train: Sequence[int],
    spec: FitSpec,
    name: str,
) -> tuple[HardwareProfile, list[str], EnergySolve]:
    """Fit ``base``'s feature coefficients to the training rows (bounded, shrunk toward the
    base); returns the profile, the features kept from ``base`` because the rows did not
    exercise them, and the solve."""
    coef_base = base.coefficients()
    feats = [o.features for o in observations]
    names = sorted({k for i in train for k, v in feats[i].items() if v} & set(coef_base))
    columns = energy_columns(base, names, spec.energy_factor)
    x = np.array([[f.get(c, 0.0) for c in names] for f in feats])
    y = np.array([o.joules for o in observations]) / 1e-12
    families = [o.family for o in observations]
    solved = fit_energy(x, y, columns, families, train, spec)
    fitted = dict(zip(names, solved.solution.tolist(), strict=True))
    return write_back(base, fitted, name), sorted(set(coef_base) - set(names)), solved


def fit_observations(
    base: HardwareProfile,
    observations: Sequence[Observation],
    spec: FitSpec,
    **context: Any,
) -> CalibrationResult:
    """Fit ``base``'s coefficients to the training share of ``observations`` and report
    fidelity on the held-out share (whole families, as ``spec`` says), beside the same fit on
    a random split: the linear path of live and file calibration.

    ``context`` (``device``, ``measured_with``, ``quantity``, ...) says what was measured;
    the profile YAML cites it. The fitted profile carries the headline figures in
    ``calibration``.
    """
    if len(observations) < 4:
        raise ConfigError(
            f"calibration needs at least 4 measured rows, got {len(observations)}; measure more "
            "configurations"
        )
    name = spec.name or "calibrated"
    families = [o.family for o in observations]

    def judged(how: str) -> tuple[HardwareProfile, dict[str, Any]]:
        cut = split(families, spec.heldout_fraction, spec.seed, how)
        fitted, kept, solved = _fit_linear(base, observations, cut.train, spec, name)
        feats = [o.features for o in observations]
        report = fidelity_report(observations, _predict(feats, fitted), _predict(feats, base), cut)
        report.update(
            split_report(cut, how), not_calibrated=kept, shrink=solved.shrink, fit="linear"
        )
        report["shrink_cv_error"] = solved.cv_error
        return fitted, report

    fitted, report = on_both_splits(judged, spec.split, families)
    report.update({"base_profile": base.name, "quantity": "joules per sample", **context})
    return CalibrationResult(replace(fitted, calibration=summary(report)), report)


def _predict(feats: Sequence[Counter[str]], hw: HardwareProfile) -> np.ndarray:
    coef = hw.coefficients()
    return np.array([sum(v * coef[k] for k, v in f.items()) * 1e-12 for f in feats])


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    from energyprune.energy.measurement.meters import cpu_name

    return cpu_name()
