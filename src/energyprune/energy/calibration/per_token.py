"""Calibrate a timed profile to energy per token (and inter-token latency) measured on language
models anywhere: the serving runtime's time terms first, then its power and energy terms.

Each row's regime is priced as :func:`energyprune.profile_lm` prices it, under the ``graphs``
runtime and split over GPUs as the row was run (:mod:`energyprune.energy.calibration.
token_rows`). The fit runs in two stages on the training rows:

1. **Time, to measured inter-token latency** (rows with ``itl_ms``): the compute and bandwidth
   shares of the base's peaks, the graph kernel floor and the host's seconds per step, by
   non-linear least squares on log relative error within bounds (shares in [0.1 %, 100 %],
   floor <= 50 us, step <= 50 ms), from a small grid of starts. Without latencies, the two
   shares are chosen on the energy's training error and the floor and step stay the base's.
2. **Energy, to measured J/token**: the one bounded, shrunk least squares every calibrator runs
   (:func:`~energyprune.energy.calibration.fit.fit_energy`) over the FLOP and byte
   coefficients, static power (the coefficient of wall time, within 5 % of the board's
   measured idle power) and busy power (of kernel time), with every training pass's implied
   power per GPU held within the board's maximum.

Rows are held out by model (``split="group"``), or every model in turn (``split="each"``: the
shipped profile is then fitted on all rows, and the held-out figures are each model's
predictions by the fit that never saw it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from energyprune.energy.calibration.fit import (
    FitSpec,
    energy_columns,
    fit_energy,
    write_back,
)
from energyprune.energy.calibration.observations import CalibrationResult
from energyprune.energy.calibration.power_limits import PowerLimits
from energyprune.energy.calibration.split import Split, split
from energyprune.energy.calibration.tables import BadRow
from energyprune.energy.calibration.token_report import token_report
from energyprune.energy.calibration.token_rows import (
    RowArrays,
    TimeTerms,
    TokenFit,
    predict,
    row_arrays,
    unfitted,
)
from energyprune.energy.calibration.token_table import TokenRow, read_token_table
from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.errors import ConfigError, EnergyPruneError
from energyprune.options import build

__all__ = ["TokenFit", "TokenRow", "calibrate_lm_from", "predict", "read_token_table"]

#: starts of the latency fit: (compute share, bandwidth share)
_STARTS = [(c, m) for c in (0.05, 0.3, 0.9) for m in (0.3, 0.6, 0.9)]
_FLOOR_US, _STEP_MS = 50.0, 50.0
POWERS = ("static_w", "active_w")
#: static power stays within this share of the board's measured idle power (an H100's idle
#: reads 71-76 W): wall time and kernel time differ only by the host's step, so idle power is
#: taken as measured, not fitted against busy power
IDLE_SPREAD = 0.05


def _snap(seconds: float) -> float:
    """A time term the fit drove to its bound of 0 (under a nanosecond) is 0."""
    return seconds if seconds >= 1e-9 else 0.0


def _itl_terms(arrays: Sequence[RowArrays], train: Sequence[int], base: TimeTerms) -> TimeTerms:
    """Time terms by least squares on log(predicted / measured latency) over ``train``."""
    rows = [arrays[i] for i in train if arrays[i].row.itl_s]
    measured = np.log([a.row.itl_s for a in rows])

    def terms(z: np.ndarray) -> TimeTerms:
        floor, step = _snap(float(z[2]) * 1e-6), _snap(float(z[3]) * 1e-3)
        return TimeTerms(math.exp(z[0]), math.exp(z[1]), floor, step)

    def residual(z: np.ndarray) -> np.ndarray:
        t = terms(z)
        return np.log([a.itl(t) for a in rows]) - measured

    lo = [math.log(1e-3), math.log(1e-3), 0.0, 0.0]
    hi = [0.0, 0.0, _FLOOR_US, _STEP_MS]
    best = None
    for c, m in _STARTS:
        start = [math.log(c), math.log(m), base.kernel_floor_s * 1e6, base.step_s * 1e3 + 0.1]
        found = least_squares(residual, np.clip(start, lo, hi), bounds=(lo, hi))
        if best is None or found.cost < best.cost:
            best = found
    return terms(best.x)


def _energy_terms(arrays, train, base: TimeTerms, hw: HardwareProfile, spec: FitSpec) -> TimeTerms:
    """Without latencies: the (compute, bandwidth) shares with the lowest energy error."""
    grid = [
        (c, m) for c in (0.03, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0) for m in (0.3, 0.5, 0.7, 0.85, 1.0)
    ]

    def error(pair) -> float:
        t = replace(base, compute_efficiency=pair[0], bandwidth_efficiency=pair[1])
        fit = _energy(arrays, train, t, hw, replace(spec, shrink=0.0))
        y = np.array([arrays[i].row.joules for i in train])
        return float(np.mean(np.abs(predict(arrays, train, hw, fit) / y - 1)))

    c, m = min(grid, key=error)
    return replace(base, compute_efficiency=c, bandwidth_efficiency=m)


def _names(arrays, train, hw: HardwareProfile) -> tuple[str, ...]:
    coef = hw.coefficients()
    used = {k for i in train for p in arrays[i].passes for k, v in p.features.items() if v}
    return tuple(sorted(used & set(coef)))


def _limits(arrays, train, names, t: TimeTerms, hw: HardwareProfile) -> PowerLimits | None:
    """Every training pass's implied power per GPU within the board's maximum."""
    if hw.power is None:
        return None
    g = []
    for i in train:
        for p in arrays[i].passes:
            seconds = p.seconds(t)
            feats = [p.features.get(n, 0.0) / seconds for n in names]
            g.append([*feats, 1.0, (seconds - t.step_s) / seconds])
    return PowerLimits(np.array(g), np.full(len(g), hw.power.max_w * 1e12))


def _energy(arrays, train, t: TimeTerms, hw: HardwareProfile, spec: FitSpec) -> TokenFit:
    names = _names(arrays, train, hw)
    columns = energy_columns(hw, names, spec.energy_factor, POWERS)
    if hw.power is not None and hw.power.idle_w:  # the board's measured idle power, +-5 %
        idle = hw.power.idle_w * 1e12
        columns[-2] = replace(columns[-2], lo=idle * (1 - IDLE_SPREAD), hi=idle * (1 + IDLE_SPREAD))
    design = [arrays[i].design(names, t) for i in range(len(arrays))]
    x = np.array([d[0] for d in design])
    fixed = [d[1] + unfitted(a, names, hw) for a, d in zip(arrays, design, strict=True)]
    y = np.array([(a.row.joules - f) * 1e12 for a, f in zip(arrays, fixed, strict=True)])
    families = [a.row.family for a in arrays]
    limits = _limits(arrays, train, names, t, hw)
    return TokenFit(t, names, fit_energy(x, y, columns, families, train, spec, limits))


def fit_rows(arrays: Sequence[RowArrays], train: Sequence[int], hw: HardwareProfile, spec: FitSpec):
    """Stage 1 (time) then stage 2 (energy) on the ``train`` rows only."""
    base = TimeTerms.of(hw)
    timed = sum(1 for i in train if arrays[i].row.itl_s)
    if timed >= 3:
        terms = _itl_terms(arrays, train, base)
    else:
        terms = _energy_terms(arrays, train, base, hw, spec)
    return _energy(arrays, train, terms, hw, spec)


def fitted_profile(hw: HardwareProfile, fit: TokenFit, name: str) -> HardwareProfile:
    """``hw`` with the fit's time terms and coefficients: what profile_lm prices with."""
    t = fit.terms
    timed = replace(
        hw,
        peak_flops={d: v * t.compute_efficiency for d, v in hw.peak_flops.items()},
        bandwidth={level: v * t.bandwidth_efficiency for level, v in hw.bandwidth.items()},
        runtime=replace(hw.runtime, graph_kernel_s=t.kernel_floor_s, graph_step_s=t.step_s),
    )
    values = dict(zip([*fit.names, *POWERS], fit.solved.solution.tolist(), strict=True))
    values = {k: v * 1e-12 if k in POWERS else v for k, v in values.items()}
    return write_back(timed, values, name)


def _trace_rows(rows: list[TokenRow], hw, bad: list[BadRow], progress) -> list[RowArrays]:
    arrays, models = [], {}
    for i, row in enumerate(rows):
        progress(i, len(rows), row.model)
        try:
            arrays.append(row_arrays(row, hw, models))
        except EnergyPruneError as e:
            bad.append(BadRow(row.where, str(e), row.order))
    return arrays


def _rounds(arrays, hw, spec: FitSpec) -> tuple[Split, np.ndarray, np.ndarray]:
    """Every model held out in turn: the rows each fit never saw, predicted by it."""
    families = [a.row.family for a in arrays]
    energy, itl = np.zeros(len(arrays)), np.zeros(len(arrays))
    for family in sorted(set(families)):
        held = [i for i, f in enumerate(families) if f == family]
        train = [i for i, f in enumerate(families) if f != family]
        fit = fit_rows(arrays, train, hw, spec)
        energy[held] = predict(arrays, held, hw, fit)
        itl[held] = [arrays[i].itl(fit.terms) for i in held]
    everything = tuple(range(len(arrays)))
    return Split(everything, everything, tuple(sorted(set(families)))), energy, itl


def calibrate_lm_from(
    source: str | Path,
    *,
    base: str | HardwareProfile = "h100-sxm-datasheet",
    skip_bad: bool = False,
    progress: Callable[[int, int, str], None] = lambda done, total, name: None,
    **settings: Any,
) -> CalibrationResult:
    """Fit a timed profile to a per-token table (see the module docstring). ``settings`` are
    the fields of :class:`~energyprune.energy.calibration.fit.FitSpec`."""
    spec = build(FitSpec, **settings)
    hw = load_hardware(base)
    if not hw.timed:
        raise ConfigError(
            f"--base {hw.name} gives no peak rates or static power; per-token calibration "
            "fits them: use a timed profile such as h100-sxm-datasheet or a100-sxm"
        )
    rows, bad = read_token_table(source)
    arrays = _trace_rows(rows, hw, bad, progress)
    if bad and not skip_bad:
        shown = "; ".join(str(b) for b in bad[:5])
        raise ConfigError(
            f"{len(bad)} bad measurement row(s): {shown}; fix them, or pass "
            "--skip-bad to fit without them"
        )
    if len(arrays) < 4:
        raise ConfigError(f"calibration needs at least 4 measured rows, got {len(arrays)}")
    families = [a.row.family for a in arrays]
    if spec.split == "each":
        cut, energy, itl = _rounds(arrays, hw, spec)
        fit = fit_rows(arrays, range(len(arrays)), hw, spec)
    else:
        cut = split(families, spec.heldout_fraction, spec.seed, spec.split)
        fit = fit_rows(arrays, cut.train, hw, spec)
        energy = predict(arrays, range(len(arrays)), hw, fit)
        itl = np.array([a.itl(fit.terms) for a in arrays])
    progress(len(rows), len(rows), "fit")
    name = spec.name or f"calibrated-{Path(source).stem}"
    fitted = fitted_profile(hw, fit, name)
    report = token_report(arrays, cut, spec, (energy, itl), hw, fit, bad)
    report["measured_with"] = f"{len(arrays)} per-token rows of {Path(source).name}"
    report["summary"]["table"] = Path(source).name
    return CalibrationResult(replace(fitted, calibration=report["summary"]), report)
