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
from functools import partial
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from energyprune.energy.calibration.fidelity import fidelity
from energyprune.energy.calibration.fit import (
    EnergySolve,
    FitSpec,
    energy_columns,
    fit_energy,
    write_back,
)
from energyprune.energy.calibration.observations import CalibrationResult, Observation
from energyprune.energy.calibration.power_limits import implied_peaks, power_limits
from energyprune.energy.calibration.report import (
    fidelity_report,
    on_both_splits,
    split_report,
    summary,
)
from energyprune.energy.calibration.split import Split, folds, split
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
]

EFFICIENCIES = tuple(float(e) for e in np.logspace(-3, 0, 25))  # share of the peak reached
POWERS = ("static_w", "active_w")  # fitted as coefficients of predicted time and kernel time


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


def _fit_time_on(rows, hw, train, occupancy: bool) -> tuple[TimeTerms, tuple[str, ...]]:
    arrays = OpArrays.of([rows[i] for i in train], hw)
    latency = np.array([rows[i].latency_s for i in train])
    return fit_terms(arrays, latency, _grid(arrays, latency), least_squares, occupancy)


def _time_error(rows, hw, terms: TimeTerms, idx, log: bool = True) -> float:
    """Mean |log predicted/measured| latency of rows ``idx`` (``log=False``: mean relative
    error)."""
    arrays = OpArrays.of([rows[i] for i in idx], hw)
    ratio = arrays.seconds(terms) / np.array([rows[i].latency_s for i in idx])
    return float(np.mean(np.abs(np.log(ratio) if log else ratio - 1)))


def fit_time(
    rows: Sequence[TimedRow],
    hw: HardwareProfile,
    train: Sequence[int],
    families: Sequence[str] | None = None,
    seed: int = 0,
) -> TimeFit:
    """Stage 1: the plain roofline on the grid, then every exercised term by least squares.
    Whether the occupancy term (the one that most easily fits noise) is used is decided by
    grouped cross-validation over the training rows' ``families``, never by training error."""
    train = list(train)
    occupancy = True
    groups = [families[i] for i in train] if families is not None else []
    if len(set(groups)) >= 3:
        cv = {}
        for use in (True, False):
            errors = []
            for f in folds(groups, 5, seed):
                fold_train = [train[i] for i in f.train]
                terms, _ = _fit_time_on(rows, hw, fold_train, use)
                errors.append(_time_error(rows, hw, terms, [train[i] for i in f.held]))
            cv[use] = float(np.mean(errors))
        occupancy = cv[True] < cv[False]
    terms, names = _fit_time_on(rows, hw, train, occupancy)
    return TimeFit(terms, _time_error(rows, hw, terms, train, log=False), names)


def _energy_row(row: TimedRow, names: Sequence[str], timed: HardwareProfile) -> list[float]:
    """One row of the energy design: its features per sample, then its predicted seconds per
    sample (static power's column) and its kernels' seconds (active power's)."""
    features, kernels = row.features(), kernel_seconds(row, timed)
    return [features.get(c, 0.0) for c in names] + [
        (kernels + timed.forward_s) / row.batch,
        kernels / row.batch,
    ]


def fit_timed_profile(
    base: HardwareProfile,
    rows: Sequence[TimedRow],
    families: Sequence[str],
    train: Sequence[int],
    spec: FitSpec,
) -> tuple[HardwareProfile, TimeFit, list[str], EnergySolve]:
    """Both stages: the fitted profile, the time fit, the coefficients kept from ``base``
    (features the training rows do not exercise) and the energy solve (bounded, shrunk toward
    the base, static and active power within the device's range)."""
    if not base.timed:
        raise ConfigError(
            f"--base {base.name} gives no peak rates: fitting time needs a timed base profile "
            "(peak_flops and bandwidth), e.g. a datasheet profile of the device"
        )
    t = fit_time(rows, base, train, families, spec.seed)
    timed = t.terms.apply(base)
    coef = base.coefficients()
    names = sorted({k for i in train for k, v in rows[i].features().items() if v} & set(coef))
    columns = energy_columns(timed, names, spec.energy_factor, POWERS)  # its launch times
    x = np.array([_energy_row(r, names, timed) for r in rows])
    y = np.array([r.joules for r in rows]) / 1e-12
    limits = power_limits(timed, names, POWERS)
    solved = fit_energy(x, y, columns, families, train, spec, limits)
    fitted = dict(zip([*names, *POWERS], solved.solution.tolist(), strict=True))
    for power in POWERS:
        fitted[power] *= 1e-12  # pJ/s → W
    profile = write_back(timed, fitted, spec.name or "calibrated")
    return profile, t, sorted(set(coef) - set(names)), solved


def fit_timed_observations(
    base: HardwareProfile,
    observations: Sequence[Observation],
    rows: Sequence[TimedRow],
    spec: FitSpec,
    **context: Any,
) -> CalibrationResult:
    """Fit time and energy on the training share; report held-out fidelity of energy and of
    latency for the fit, plain MACs and ``base``, split by family as ``spec`` says, beside the
    same fit's figures on the other split."""
    if len(rows) < 6:
        raise ConfigError(f"fitting time needs at least 6 measured rows, got {len(rows)}")
    families = [o.family for o in observations]
    judge = partial(_judged, base, observations, rows, spec)
    fitted, report = on_both_splits(judge, spec.split, families)
    report.update(context)
    return CalibrationResult(replace(fitted, calibration=summary(report)), report)


def _judged(base, observations, rows, spec: FitSpec, how: str):
    """The profile fitted on one split's training rows, and its report on the held-out ones."""
    families = [o.family for o in observations]
    cut = split(families, spec.heldout_fraction, spec.seed, how)
    fitted, t, kept, solved = fit_timed_profile(base, rows, families, cut.train, spec)
    predicted = np.array([predict_joules(r, fitted) for r in rows])
    base_predicted = np.array([predict_joules(r, base) for r in rows])
    report = fidelity_report(observations, predicted, base_predicted, cut)
    report.update(_time_report(observations, rows, fitted, base, cut))
    terms = t.terms
    report.update(
        split_report(cut, how),
        fit="timed",
        base_profile=base.name,
        not_calibrated=kept,
        shrink=solved.shrink,
        shrink_cv_error=solved.cv_error,
        compute_efficiency=terms.compute_efficiency,
        bandwidth_efficiency=terms.bandwidth_efficiency,
        forward_s=terms.forward_s,
        launch_s=terms.launch_s,
        static_w=fitted.static_w,
        active_w=fitted.active_w,
        runtime=fitted.runtime.to_dict(),
        time_terms_fitted=list(t.fitted),
        latency_train_mape=t.train_mape,
        implied_peak_w=implied_peaks(fitted),
        max_w=fitted.power.max_w if fitted.power else None,
    )
    return fitted, report


def _time_report(observations, rows, fitted, base, cut: Split) -> dict[str, Any]:
    """Held-out latency fidelity: the fitted time model, MACs (one scale) and ``base``."""
    held, train = list(cut.held), list(cut.train)
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
