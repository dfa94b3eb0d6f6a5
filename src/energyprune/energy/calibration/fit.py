"""The one fit every calibrator runs: settings, bounds, a shrunk least-squares solve, and the
one write-back into a profile.

Each fitted coefficient has stated bounds: per-MAC, per-op and per-byte energies stay within
``energy_factor`` of the base profile's (a datasheet or a textbook figure), terms the base
leaves at 0 (launch energy, unaligned MACs) are only non-negative, and powers stay between 0
and the device's declared maximum. The solve minimises relative error plus a pull toward the
base, ``shrink`` × Σ (c/c_base − 1)² per row: a coefficient the rows barely exercise stays
near the base instead of absorbing what other terms should carry. The pull's strength is chosen
by cross-validation on grouped folds of the training rows (whole families out, as the held-out
split), never on the held-out rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import lsq_linear, minimize

from energyprune.energy.calibration.power_limits import PowerLimits
from energyprune.energy.calibration.split import SPLITS, folds
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.errors import ConfigError

__all__ = [
    "SHRINKS",
    "Column",
    "EnergySolve",
    "FitSpec",
    "energy_columns",
    "fit_energy",
    "solve",
    "write_back",
]

#: candidate strengths of the pull toward the base (per row; 0 = none)
SHRINKS = (0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
PJ_PER_J = 1e12


@dataclass(frozen=True)
class FitSpec:
    """How every calibrator fits and judges: the held-out share and how it is drawn (whole
    families, or rows at random), the seed, how far a per-op or per-byte energy may move from
    the base (a factor), the pull toward the base (None: chosen by grouped cross-validation),
    the number of folds, and the fitted profile's name."""

    heldout_fraction: float = 0.25
    seed: int = 0
    split: str = "group"
    energy_factor: float = 4.0
    shrink: float | None = None
    folds: int = 5
    name: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(
                f"heldout_fraction (--heldout) must be in (0, 1), got {self.heldout_fraction}"
            )
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not self.energy_factor >= 1:
            raise ConfigError(f"energy_factor must be >= 1, got {self.energy_factor}")
        if self.shrink is not None and not self.shrink >= 0:
            raise ConfigError(f"shrink must be >= 0 (or None to choose it), got {self.shrink}")
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2, got {self.folds}")


@dataclass(frozen=True)
class Column:
    """One fitted coefficient, in the solve's units (pJ per unit; a power in pJ/s): its base
    value and its bounds."""

    name: str
    base: float
    lo: float = 0.0
    hi: float = math.inf


def energy_columns(
    base: HardwareProfile, names: Sequence[str], factor: float, powers: Sequence[str] = ()
) -> list[Column]:
    """Bounds of each feature coefficient in ``names`` and of each power in ``powers``
    (``static_w``, ``active_w``). A kernel launch may cost at most the device's maximum power
    over the longest launch time the profile prices."""
    coef = base.coefficients()
    top = base.power.max_w * PJ_PER_J if base.power is not None else math.inf
    launch_s = max([base.launch_s, *base.runtime.launch_s.values()])
    out = []
    for name in names:
        value = coef[name]
        scaled = value > 0 and name.partition(":")[0] in ("mac", "add", "bytes")
        if scaled and name != "mac:unaligned":
            out.append(Column(name, value, value / factor, value * factor))
        elif name == "launch" and launch_s > 0:
            out.append(Column(name, value, 0.0, max(value, top * launch_s)))
        else:
            out.append(Column(name, value))
    for name in powers:
        out.append(Column(name, getattr(base, name) * PJ_PER_J, 0.0, top))
    return out


def solve(
    x: np.ndarray,
    y: np.ndarray,
    columns: Sequence[Column],
    shrink: float = 0.0,
    limits: PowerLimits | None = None,
) -> np.ndarray:
    """Least squares on relative error, ``x @ c ≈ y``, within each column's bounds, pulled
    toward its base by ``shrink`` and held to ``limits`` (``g @ c <= h``: power)."""
    rows = x / y[:, None]
    norms = np.linalg.norm(rows, axis=0)
    norms[norms == 0] = 1.0
    a, b = rows / norms, np.ones_like(y)
    lo = np.array([c.lo for c in columns]) * norms
    hi = np.array([c.hi for c in columns]) * norms
    pulled = [j for j, c in enumerate(columns) if c.base > 0 and shrink > 0]
    if pulled:
        weight = math.sqrt(shrink * len(y))
        ridge = np.zeros((len(pulled), len(columns)))
        for r, j in enumerate(pulled):
            ridge[r, j] = weight / (norms[j] * columns[j].base)
        a, b = np.vstack([a, ridge]), np.concatenate([b, np.full(len(pulled), weight)])
    result = lsq_linear(a, b, bounds=(lo, hi), method="bvls").x
    if limits is not None and np.any(limits.g @ (result / norms) > limits.h * (1 + 1e-9)):
        result = _within_limits(a, b, (lo, hi), limits.g / norms / limits.h[:, None], result)
    return result / norms


def _within_limits(a, b, bounds, g, start) -> np.ndarray:
    """``min |a s - b|²`` within ``bounds`` and ``g @ s <= 1`` (SLSQP, from the box solution
    scaled down onto the limits)."""
    start = start / max(1.0, float(np.max(g @ start)))
    box = [(lo, None if math.isinf(hi) else hi) for lo, hi in zip(*bounds, strict=True)]
    found = minimize(
        lambda s: 0.5 * float(np.sum((a @ s - b) ** 2)),
        start,
        jac=lambda s: a.T @ (a @ s - b),
        bounds=box,
        constraints=[{"type": "ineq", "fun": lambda s: 1.0 - g @ s, "jac": lambda s: -g}],
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-12},
    )
    return found.x


@dataclass(frozen=True)
class EnergySolve:
    """The fitted coefficients (solve units), the pull used, and each candidate's grouped
    cross-validated error (mean |log predicted/measured|) when it was chosen that way."""

    solution: np.ndarray
    shrink: float
    cv_error: dict[str, float]


def _log_error(predicted: np.ndarray, measured: np.ndarray) -> float:
    ratio = np.maximum(predicted, 1e-30) / measured
    return float(np.mean(np.abs(np.log(ratio))))


def fit_energy(
    x: np.ndarray,
    y: np.ndarray,
    columns: Sequence[Column],
    families: Sequence[str],
    train: Sequence[int],
    spec: FitSpec,
    limits: PowerLimits | None = None,
) -> EnergySolve:
    """Solve on the ``train`` rows within ``limits``; the pull toward the base is
    ``spec.shrink``, or the candidate with the lowest error over grouped folds of the
    training rows."""
    train = list(train)
    xt, yt = x[train], y[train]
    if spec.shrink is not None:
        return EnergySolve(solve(xt, yt, columns, spec.shrink, limits), spec.shrink, {})
    groups = [families[i] for i in train]
    splits = folds(groups, spec.folds, spec.seed)
    errors: dict[str, float] = {}
    if len(splits) >= 2:
        for shrink in SHRINKS:
            fold_errors = []
            for f in splits:
                c = solve(xt[list(f.train)], yt[list(f.train)], columns, shrink, limits)
                fold_errors.append(_log_error(xt[list(f.held)] @ c, yt[list(f.held)]))
            errors[repr(shrink)] = float(np.mean(fold_errors))
    best = min(SHRINKS, key=lambda s: errors.get(repr(s), math.inf)) if errors else 0.0
    return EnergySolve(solve(xt, yt, columns, best, limits), best, errors)


def write_back(hw: HardwareProfile, fitted: dict[str, float], name: str) -> HardwareProfile:
    """``hw`` renamed, with every fitted value in ``fitted`` (feature coefficients in pJ;
    ``static_w``, ``active_w`` in watts): the one place a fit writes into a profile."""
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
        static_w=fitted.get("static_w", hw.static_w),
        active_w=fitted.get("active_w", hw.active_w),
        launch_pj=fitted.get("launch", hw.launch_pj),
        unaligned_mac_pj=fitted.get("mac:unaligned", hw.unaligned_mac_pj),
    )
