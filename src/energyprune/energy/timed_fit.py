"""Fit time and static power, not only MACs and bytes, to rows that carry measured latency and
gross energy (a Jetson TX2's table: at 5-10 W of module power, a block's energy is mostly time).

The model is the roofline of :mod:`energyprune.energy.roofline` plus a fixed time per forward:

    T = forward_s + Σ_ops max(compute_i / e_c, memory_i / e_m) + launch_s × launches
    E = Σ_features c_f × amount_f + static_w × T

``compute_i`` and ``memory_i`` are the op's seconds at the base profile's peaks. The fit runs in
two stages, each on relative error over the training rows:

1. **Time, to measured latency.** The efficiencies ``e_c`` and ``e_m`` (the shares of the peaks
   that kernels reach) enter through the max(), which makes T non-linear in them. They are
   searched on a log grid from 0.1 % to 100 %. For each pair, ``forward_s`` and ``launch_s``
   are linear and are solved by non-negative least squares. The pair with the least error is
   kept.
2. **Energy, to measured gross joules.** Non-negative least squares over the dynamic features
   and the predicted T (stage 1's, not the measured latency, because the profile must price
   models nobody measured). T's coefficient is ``static_w``.

Every prediction, held-out rows included, is priced by :func:`energyprune.energy.roofline.
op_seconds` and the profile's coefficients, op by op, as :func:`energyprune.estimate` prices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from energyprune.energy.calibrate import (
    CalibrationResult,
    Observation,
    _check_fraction,
    _holdout,
    _report,
    _solve,
    _summary,
)
from energyprune.energy.fidelity import fidelity
from energyprune.energy.hardware import HardwareProfile
from energyprune.energy.roofline import op_rates, op_seconds
from energyprune.errors import ConfigError

__all__ = [
    "EFFICIENCIES",
    "TimeFit",
    "TimedRow",
    "fit_timed_observations",
    "fit_timed_profile",
    "predict_joules",
    "predict_seconds",
    "with_coefficients",
]

EFFICIENCIES = tuple(float(e) for e in np.logspace(-3, 0, 25))  # share of the peak reached


@dataclass(frozen=True)
class TimedRow:
    """One measured configuration: per-op feature amounts of one forward, its batch, the
    measured seconds per forward and gross joules per sample."""

    ops: tuple[Counter[str], ...]
    batch: int
    latency_s: float
    joules: float

    def features(self) -> Counter[str]:
        """Per-sample energy features."""
        total: Counter[str] = Counter()
        for amounts in self.ops:
            total.update(amounts)
        return Counter({k: v / self.batch for k, v in total.items()})


@dataclass(frozen=True)
class TimeFit:
    compute_efficiency: float
    bandwidth_efficiency: float
    forward_s: float
    launch_s: float
    train_mape: float


def predict_seconds(row: TimedRow, hw: HardwareProfile) -> float:
    """Seconds per forward of ``row`` under ``hw``, op by op as estimate() prices them."""
    return hw.forward_s + sum(op_seconds(amounts, hw) for amounts in row.ops)


def predict_joules(row: TimedRow, hw: HardwareProfile) -> float:
    """Gross joules per sample of ``row`` under ``hw``: dynamic + static over its time."""
    coef = hw.coefficients()
    dynamic = sum(v * coef.get(k, 0.0) for k, v in row.features().items()) * 1e-12
    return dynamic + hw.static_w * predict_seconds(row, hw) / row.batch


def _rates(rows: Sequence[TimedRow], hw: HardwareProfile) -> list[np.ndarray]:
    return [np.array([op_rates(a, hw) for a in row.ops]).reshape(-1, 2) for row in rows]


def fit_time(rows: Sequence[TimedRow], hw: HardwareProfile, train: Sequence[int]) -> TimeFit:
    """Stage 1: efficiencies on the grid, forward and launch seconds by NNLS, per pair."""
    rates = _rates(rows, hw)
    latency = np.array([rows[i].latency_s for i in train])
    launches = np.array([sum(a.get("launch", 0) for a in rows[i].ops) for i in train])
    best = None
    for e_c in EFFICIENCIES:
        for e_m in EFFICIENCIES:
            roof = np.array([np.maximum(rates[i][:, 0] / e_c, rates[i][:, 1] / e_m).sum()
                             for i in train])  # fmt: skip
            design = np.stack([np.ones_like(latency), launches], axis=1) / latency[:, None]
            (forward, launch), _ = nnls(design, 1 - roof / latency)
            error = float(np.mean(np.abs((forward + launch * launches + roof) / latency - 1)))
            if best is None or error < best.train_mape:
                best = TimeFit(e_c, e_m, float(forward), float(launch), error)
    return best


def fit_timed_profile(
    base: HardwareProfile, rows: Sequence[TimedRow], train: Sequence[int], name: str
) -> tuple[HardwareProfile, TimeFit, list[str]]:
    """Both stages: the fitted profile, the time fit and the coefficients kept from ``base``
    (features the training rows do not exercise)."""
    if not base.timed:
        raise ConfigError(
            f"--base {base.name} gives no peak rates: fitting time needs a timed base profile "
            "(peak_flops and bandwidth), e.g. a datasheet profile of the device"
        )
    t = fit_time(rows, base, train)
    peaks = {d: v * t.compute_efficiency for d, v in base.peak_flops.items()}
    bandwidth = {k: v * t.bandwidth_efficiency for k, v in base.bandwidth.items()}
    timed = replace(base, peak_flops=peaks, bandwidth=bandwidth, launch_s=t.launch_s,
                    forward_s=t.forward_s)  # fmt: skip
    coef = base.coefficients()
    feats = [rows[i].features() for i in train]
    columns = sorted({k for f in feats for k, v in f.items() if v} & set(coef))
    seconds = [predict_seconds(rows[i], timed) / rows[i].batch for i in train]
    x = np.array(
        [[f.get(c, 0.0) for c in columns] + [s] for f, s in zip(feats, seconds, strict=True)]
    )
    y = np.array([rows[i].joules for i in train]) / 1e-12
    solution = _solve(x, y)
    fitted = dict(zip(columns, solution[:-1].tolist(), strict=True))
    profile = with_coefficients(timed, fitted, name, static_w=float(solution[-1]) * 1e-12)
    return profile, t, sorted(set(coef) - set(columns))


def with_coefficients(
    hw: HardwareProfile, fitted: dict[str, float], name: str, static_w: float
) -> HardwareProfile:
    """``hw`` renamed, with the fitted feature coefficients (pJ) and static power."""
    compute = {d: dict(row) for d, row in hw.compute_pj.items()}
    memory = dict(hw.memory_pj_per_byte)
    for feature, value in fitted.items():
        kind, _, key = feature.partition(":")
        if kind in ("mac", "add") and key in compute:
            compute[key][kind] = value
        elif kind == "bytes":
            memory[key] = value
    return replace(hw, name=name, compute_pj=compute, memory_pj_per_byte=memory, static_w=static_w,
                   launch_pj=fitted.get("launch", hw.launch_pj),
                   unaligned_mac_pj=fitted.get("mac:unaligned", hw.unaligned_mac_pj))  # fmt: skip


def fit_timed_observations(
    base: HardwareProfile,
    observations: Sequence[Observation],
    rows: Sequence[TimedRow],
    name: str,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    **context: Any,
) -> CalibrationResult:
    """Fit time and energy on the training share; report held-out fidelity of energy and of
    latency for the fit, plain MACs and ``base`` (the split is calibrate's, seed for seed)."""
    _check_fraction(heldout_fraction)
    if len(rows) < 6:
        raise ConfigError(f"fitting time needs at least 6 measured rows, got {len(rows)}")
    held, train = _holdout(len(rows), heldout_fraction, seed)
    fitted, t, kept = fit_timed_profile(base, rows, train, name)
    predicted = np.array([predict_joules(r, fitted) for r in rows])
    report = _report(observations, predicted, np.array([predict_joules(r, base) for r in rows]),
                     held, train)  # fmt: skip
    report.update(_time_report(observations, rows, fitted, base, held, train))
    report.update(base_profile=base.name, not_calibrated=kept,
                  compute_efficiency=t.compute_efficiency,
                  bandwidth_efficiency=t.bandwidth_efficiency, forward_s=t.forward_s,
                  launch_s=t.launch_s, static_w=fitted.static_w, **context)  # fmt: skip
    return CalibrationResult(replace(fitted, calibration=_summary(report)), report)


def _time_report(observations, rows, fitted, base, held, train) -> dict[str, Any]:
    """Held-out latency fidelity: the fitted time model, MACs (one scale) and ``base``."""
    y = np.array([r.latency_s for r in rows])
    macs = np.array([o.macs * o.batch_size for o in observations], dtype=float)
    groups = np.array([o.group for o in observations])
    scale = float(np.median(y[train] / np.maximum(macs[train], 1)))
    found = {}
    predictors = {"fitted": np.array([predict_seconds(r, fitted) for r in rows]),
                  "macs": scale * macs,
                  "base": np.array([predict_seconds(r, base) for r in rows])}  # fmt: skip
    for key, values in predictors.items():
        figures = fidelity(values[held], y[held], macs[held], groups[held])
        found.update({f"latency_{key}_{k}": v for k, v in figures.items()})
    return found
