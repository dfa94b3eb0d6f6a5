"""Fit time and static power, not only MACs and bytes, to rows that carry measured latency and
gross energy (a Jetson TX2's table: at 5-10 W of module power, a block's energy is mostly time).

The model is the roofline of :mod:`energyprune.energy.pricing.roofline` with the runtime's kernel
terms of :mod:`energyprune.energy.hardware.kernel_time`, plus a fixed time per forward:

    T = forward_s + Σ_ops [max(compute_i × k_i / e_c, memory_i / e_m) + launch_s[kind] × launches]
    k_i = (O_i + N0) / O_i  ×  1 / efficiency[variant]  ×  (1 + S0 × weights_i / MACs_i, grouped)
    E = Σ_features c_f × amount_f + static_w × T + active_w × (T - forward_s)

``compute_i`` and ``memory_i`` are the op's seconds at the base profile's peaks. The fit runs in
two stages, each on relative error over the training rows:

1. **Time, to measured latency.** The terms are non-linear in T (the max(), the occupancy
   share), so they are fitted by non-linear least squares on log relative error
   (``scipy.optimize.least_squares``, every term positive through its logarithm, within
   bounds). It starts from the plain roofline's best fit: ``e_c`` and ``e_m`` searched on a log
   grid from 0.1 % to 100 %, ``forward_s`` and ``launch_s`` solved for each pair by
   non-negative least squares. A term is fitted only when the training rows exercise it (a
   per-variant efficiency needs such convs; a per-kind launch time needs such launches).
2. **Energy, to measured gross joules.** Non-negative least squares over the dynamic features,
   the predicted T (whose coefficient is ``static_w``) and the predicted kernel time (whose
   coefficient is ``active_w``): stage 1's times, not the measured latency, because the profile
   must price models nobody measured.

Every prediction, held-out rows included, is priced by :func:`energyprune.energy.pricing.roofline.
op_seconds` and the profile's coefficients, op by op, as :func:`energyprune.estimate` prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from energyprune.energy.calibration.fidelity import fidelity
from energyprune.energy.calibration.live import (
    CalibrationResult,
    Observation,
    check_fraction,
    fidelity_report,
    holdout,
    solve,
    summary,
)
from energyprune.energy.calibration.time_terms import OpArrays, TimedRow, TimeTerms, fit_terms
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.roofline import op_seconds
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


def kernel_seconds(row: TimedRow, hw: HardwareProfile) -> float:
    """Seconds per forward that ``row``'s kernels run under ``hw`` (no fixed forward time)."""
    return sum(op_seconds(op.amounts, hw, op.timing) for op in row.ops)


def predict_seconds(row: TimedRow, hw: HardwareProfile) -> float:
    """Seconds per forward of ``row`` under ``hw``, op by op as estimate() prices them."""
    return hw.forward_s + kernel_seconds(row, hw)


def predict_joules(row: TimedRow, hw: HardwareProfile) -> float:
    """Gross joules per sample of ``row`` under ``hw``: dynamic + static over its time +
    active power over its kernels' time."""
    coef = hw.coefficients()
    dynamic = sum(v * coef.get(k, 0.0) for k, v in row.features().items()) * 1e-12
    kernels = kernel_seconds(row, hw)
    return dynamic + (hw.static_w * (hw.forward_s + kernels) + hw.active_w * kernels) / row.batch


def _grid(arrays: OpArrays, latency: np.ndarray) -> TimeTerms:
    """The plain roofline's best (e_c, e_m) on the grid, forward and launch seconds by NNLS."""
    best, best_error = None, np.inf
    design = np.stack([np.ones_like(latency), arrays.launches_per_row()], axis=1) / latency[:, None]
    for e_c in EFFICIENCIES:
        for e_m in EFFICIENCIES:
            roof = arrays.roof(e_c, e_m)
            (forward, launch), _ = nnls(design, 1 - roof / latency)
            error = float(
                np.mean(np.abs((forward + design[:, 1] * latency * launch + roof) / latency - 1))
            )
            if error < best_error:
                best_error = error
                best = TimeTerms(e_c, e_m, float(forward), float(launch))
    return best


@dataclass(frozen=True)
class TimeFit:
    """Stage 1's fitted time terms and their mean relative error on the training rows."""

    terms: TimeTerms
    train_mape: float
    fitted: tuple[str, ...] = field(default=())


def fit_time(rows: Sequence[TimedRow], hw: HardwareProfile, train: Sequence[int]) -> TimeFit:
    """Stage 1: the plain roofline on the grid, then every exercised term by least squares."""
    arrays = OpArrays.of([rows[i] for i in train], hw)
    latency = np.array([rows[i].latency_s for i in train])
    start = _grid(arrays, latency)
    terms, names = fit_terms(arrays, latency, start, least_squares)
    error = float(np.mean(np.abs(arrays.seconds(terms) / latency - 1)))
    return TimeFit(terms, error, names)


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
    timed = t.terms.apply(base)
    coef = base.coefficients()
    feats = [rows[i].features() for i in train]
    columns = sorted({k for f in feats for k, v in f.items() if v} & set(coef))
    kernels = [kernel_seconds(rows[i], timed) / rows[i].batch for i in train]
    forward = [timed.forward_s / rows[i].batch for i in train]
    x = np.array(
        [
            [f.get(c, 0.0) for c in columns] + [k + w, k]
            for f, k, w in zip(feats, kernels, forward, strict=True)
        ]
    )
    y = np.array([rows[i].joules for i in train]) / 1e-12
    solution = solve(x, y)
    fitted = dict(zip(columns, solution[:-2].tolist(), strict=True))
    profile = with_coefficients(
        timed,
        fitted,
        name,
        static_w=float(solution[-2]) * 1e-12,
        active_w=float(solution[-1]) * 1e-12,
    )
    return profile, t, sorted(set(coef) - set(columns))


def with_coefficients(
    hw: HardwareProfile,
    fitted: dict[str, float],
    name: str,
    static_w: float,
    active_w: float = 0.0,
) -> HardwareProfile:
    """``hw`` renamed, with the fitted feature coefficients (pJ), static and active power."""
    compute = {d: dict(row) for d, row in hw.compute_pj.items()}
    memory = dict(hw.memory_pj_per_byte)
    for feature, value in fitted.items():
        kind, _, key = feature.partition(":")
        if kind in ("mac", "add") and key in compute:
            compute[key][kind] = value
        elif kind == "bytes":
            memory[key] = value
    return replace(
        hw,
        name=name,
        compute_pj=compute,
        memory_pj_per_byte=memory,
        static_w=static_w,
        active_w=active_w,
        launch_pj=fitted.get("launch", hw.launch_pj),
        unaligned_mac_pj=fitted.get("mac:unaligned", hw.unaligned_mac_pj),
    )


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
    check_fraction(heldout_fraction)
    if len(rows) < 6:
        raise ConfigError(f"fitting time needs at least 6 measured rows, got {len(rows)}")
    held, train = holdout(len(rows), heldout_fraction, seed)
    fitted, t, kept = fit_timed_profile(base, rows, train, name)
    predicted = np.array([predict_joules(r, fitted) for r in rows])
    report = fidelity_report(
        observations, predicted, np.array([predict_joules(r, base) for r in rows]), held, train
    )
    report.update(_time_report(observations, rows, fitted, base, held, train))
    terms = t.terms
    report.update(
        base_profile=base.name,
        not_calibrated=kept,
        compute_efficiency=terms.compute_efficiency,
        bandwidth_efficiency=terms.bandwidth_efficiency,
        forward_s=terms.forward_s,
        launch_s=terms.launch_s,
        static_w=fitted.static_w,
        active_w=fitted.active_w,
        runtime=fitted.runtime.to_dict(),
        time_terms_fitted=list(t.fitted),
        latency_train_mape=t.train_mape,
        **context,
    )
    return CalibrationResult(replace(fitted, calibration=summary(report)), report)


def _time_report(observations, rows, fitted, base, held, train) -> dict[str, Any]:
    """Held-out latency fidelity: the fitted time model, MACs (one scale) and ``base``."""
    y = np.array([r.latency_s for r in rows])
    macs = np.array([o.macs * o.batch_size for o in observations], dtype=float)
    groups = np.array([o.group for o in observations])
    scale = float(np.median(y[train] / np.maximum(macs[train], 1)))
    found = {}
    predictors = {
        "fitted": np.array([predict_seconds(r, fitted) for r in rows]),
        "macs": scale * macs,
        "base": np.array([predict_seconds(r, base) for r in rows]),
    }
    for key, values in predictors.items():
        figures = fidelity(values[held], y[held], macs[held], groups[held])
        found.update({f"latency_{key}_{k}": v for k, v in figures.items()})
    return found
