"""Calibrate a timed profile to energy per token measured on language models anywhere.

Rows (CSV or JSON lines): ``model`` (an ``hf:`` config), ``phase`` (prefill, decode or
workload) with its regime columns (``batch``; ``prompt`` / ``context`` / ``output``), ``gpus``,
``dtype`` and ``joules_per_token`` (the total over the ``gpus`` GPUs); optional ``device`` and
``source``. Each row's regime is traced as :func:`energyprune.profile_lm` traces it.

The fit is the one of :mod:`energyprune.energy.calibration.live`: non-negative least squares on
relative error over the energy features, plus one more column, the roofline time, whose
coefficient is the static power. Time depends on how much of the datasheet peak kernels reach,
so the compute and bandwidth efficiencies are searched on a grid and the pair with the lowest
training error is kept. Held-out fidelity is reported beside a baseline that needs no tracer:
J/token proportional to active parameters / batch (one constant per phase).

``gpus``: the model is priced as one device. Split over G GPUs by tensor parallelism, each
reads 1/G of the weights in 1/G of the time, so to first order the total is the same; the
communication between GPUs is not priced.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from energyprune.energy.calibration.fidelity import fidelity, n_close_pairs
from energyprune.energy.calibration.fit import (
    FitSpec,
    energy_columns,
    fit_energy,
    solve,
    write_back,
)
from energyprune.energy.calibration.observations import CalibrationResult
from energyprune.energy.calibration.report import split_report
from energyprune.energy.calibration.split import Split, split
from energyprune.energy.calibration.tables import BadRow, table_records
from energyprune.energy.calibration.timed_fit import EFFICIENCIES
from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.energy.lm.per_token import lm_traces
from energyprune.energy.lm.regimes import PHASES, Regime
from energyprune.energy.pricing.features import op_features
from energyprune.energy.pricing.roofline import op_rates
from energyprune.errors import ConfigError, EnergyPruneError
from energyprune.models.layers import TORCH_DTYPES
from energyprune.options import build

__all__ = ["TokenRow", "calibrate_lm_from", "read_token_table"]


@dataclass(frozen=True)
class TokenRow:
    """One measured regime of one language model (J per token, total over ``gpus``)."""

    where: str
    model: str
    regime: Regime
    dtype: str
    joules: float
    gpus: int = 1
    device: str = ""
    order: tuple[str, int] = ("", 0)


def _int(record: dict[str, Any], key: str, default: int | None = None) -> int:
    value = record.get(key)
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a whole number, got {value!r}") from None


#: the columns each phase's regime is made of (batch defaults to 1)
_COLUMNS = {"prefill": ("prompt",), "decode": ("context",), "workload": ("prompt", "output")}


def _regime(record: dict[str, Any]) -> Regime:
    phase = str(record.get("phase") or "").strip()
    if phase not in PHASES:
        raise ValueError(f"phase must be {', '.join(PHASES)}, got {phase!r}")
    fields = {c: _int(record, c) for c in _COLUMNS[phase]}
    return PHASES[phase](batch=_int(record, "batch", 1), **fields)


def _row(record: dict[str, Any], where: str, folder: Path) -> TokenRow:
    missing = [c for c in ("model", "phase", "dtype", "joules_per_token") if not record.get(c)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    joules = float(record["joules_per_token"])
    if not math.isfinite(joules) or joules <= 0:
        raise ValueError(f"joules_per_token must be a positive number, got {joules}")
    model = str(record["model"]).strip()
    if not model.startswith("hf:"):
        raise ValueError(f"model must be an hf: config (hf:PATH), got {model!r}")
    path = Path(model[3:])
    model = model if path.is_absolute() else f"hf:{folder / path}"
    dtype = str(record["dtype"]).strip()
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype '{dtype}' (use one of {', '.join(TORCH_DTYPES)})")
    return TokenRow(
        where,
        model,
        _regime(record),
        dtype,
        joules,
        _int(record, "gpus", 1),
        str(record.get("device") or "").strip(),
    )


def read_token_table(source: str | Path) -> tuple[list[TokenRow], list[BadRow]]:
    """The usable rows of a per-token table (file or folder) and the bad ones, by line."""
    rows: list[TokenRow] = []
    bad: list[BadRow] = []
    for file, n, where, record in table_records(source):
        try:
            if not isinstance(record, dict):
                raise ValueError(f"expected an object of columns, got {type(record).__name__}")
            rows.append(replace(_row(record, where, file.parent), order=(file.name, n)))
        except (ValueError, TypeError, ConfigError) as e:
            bad.append(BadRow(where, str(e), (file.name, n)))
    return rows, bad


@dataclass
class _Observed:
    """A row traced: dynamic features per token, per-op (compute s, memory s) at peak with
    the op's weight, launches per token, FLOPs per token, active parameters."""

    row: TokenRow
    features: Counter[str]
    rates: np.ndarray  # (ops, 3): compute s, memory s, weight
    launches: float
    flops: float
    active_params: float


def _observe(row: TokenRow, hw: HardwareProfile, models: dict) -> _Observed:
    """The row's model built in the dtype it ran in, its regime traced and priced as traced
    (an fp32 norm inside a bf16 model stays fp32), as ``profile_lm`` prices it."""
    key = (row.model, row.dtype)
    if key not in models:
        from energyprune.models.hf import build_hf, read_hf_config

        models[key] = build_hf(read_hf_config(row.model), TORCH_DTYPES[row.dtype])
    model = models[key]
    features: Counter[str] = Counter()
    rates, launches, flops = [], 0.0, 0.0
    for traced in lm_traces(model, row.regime):
        for record in traced.trace.records:
            amounts = op_features(record, hw, None).amounts
            for name, amount in amounts.items():
                features[name] += amount * traced.share
            rates.append((*op_rates(amounts, hw), traced.share))
            launches += amounts.get("launch", 0) * traced.share
            flops += 2 * record.macs * traced.share
    return _Observed(row, features, np.array(rates), launches, flops, _active_params(model))


def _active_params(model) -> float:
    from energyprune.models.hf import moe_experts

    moe = moe_experts(model.config)
    total = 0.0
    for p in model.parameters():
        share = moe[1] / moe[0] if moe and p.dim() == 3 else 1.0  # an expert stack
        total += p.numel() * share
    return total


def _seconds(obs: _Observed, hw: HardwareProfile, e_compute: float, e_memory: float) -> float:
    r = obs.rates
    ops = np.maximum(r[:, 0] / e_compute, r[:, 1] / e_memory) * r[:, 2]
    return float(ops.sum()) + hw.launch_s * obs.launches


def _design(observed, columns, hw, eff) -> np.ndarray:
    x = [[o.features.get(c, 0.0) for c in columns] + [_seconds(o, hw, *eff)] for o in observed]
    return np.array(x)


def _train_error(observed, names, columns, hw, y, train, eff) -> float:
    x = _design(observed, names, hw, eff)
    c = solve(x[train], y[train], columns)
    return float(np.mean(np.abs(x[train] @ c / y[train] - 1)))


def _efficiencies(observed, names, columns, hw, y, train) -> tuple[float, float]:
    """The (compute, bandwidth) shares of peak with the lowest training error: the best pair
    on the grid, then refined continuously (within 0.1 % and 100 %) from there."""
    grid = [(c, m) for c in EFFICIENCIES for m in EFFICIENCIES]
    best = min(grid, key=lambda e: _train_error(observed, names, columns, hw, y, train, e))
    lo = math.log(EFFICIENCIES[0])
    found = minimize(
        lambda z: _train_error(observed, names, columns, hw, y, train, tuple(np.exp(z))),
        np.log(best),
        method="Nelder-Mead",
        bounds=[(lo, 0.0), (lo, 0.0)],
        options={"xatol": 1e-4, "fatol": 1e-7},
    )
    return tuple(float(v) for v in np.exp(found.x))


def _fit(observed: Sequence[_Observed], hw: HardwareProfile, train: list[int], spec: FitSpec):
    """(efficiencies, coefficient columns, energy solve) with the lowest training error."""
    coef = hw.coefficients()
    names = sorted({k for i in train for k, v in observed[i].features.items() if v} & set(coef))
    if hw.launch_s > 0:  # a launch's energy is static power over its launch time: not a term
        names = [n for n in names if n != "launch"]  # of its own, or the two trade off freely
    columns = energy_columns(hw, names, spec.energy_factor, ("static_w",))
    y = np.array([o.row.joules for o in observed]) / 1e-12
    eff = _efficiencies(observed, names, columns, hw, y, train)
    x = _design(observed, names, hw, eff)
    families = [o.row.model for o in observed]
    return eff, names, fit_energy(x, y, columns, families, train, spec)


def _profile(hw: HardwareProfile, eff, names, solution, name: str) -> HardwareProfile:
    timed = replace(
        hw,
        peak_flops={d: v * eff[0] for d, v in hw.peak_flops.items()},
        bandwidth={level: v * eff[1] for level, v in hw.bandwidth.items()},
    )
    fitted = dict(zip(names, solution[:-1].tolist(), strict=True))
    fitted["static_w"] = float(solution[-1]) * 1e-12
    return write_back(timed, fitted, name)


def _predict(observed, hw: HardwareProfile, eff=(1.0, 1.0)) -> np.ndarray:
    """J/token under ``hw``, whose peaks are ``eff`` times the ones the rows were traced at."""
    coef = hw.coefficients()
    dynamic = [sum(v * coef[k] for k, v in o.features.items()) * 1e-12 for o in observed]
    static = [hw.static_w * _seconds(o, hw, *eff) for o in observed]
    return np.array(dynamic) + np.array(static)


def _baseline(observed, train: list[int]) -> np.ndarray:
    """J/token = c_phase x active parameters / batch (no tracer), c fitted on training rows."""
    proxy = np.array([o.active_params / o.row.regime.batch for o in observed])
    y = np.array([o.row.joules for o in observed])
    phases = np.array([o.row.regime.phase for o in observed])
    scale = {}
    for phase in set(phases):
        idx = [i for i in train if phases[i] == phase] or list(train)
        scale[phase] = float(np.median(y[idx] / proxy[idx]))
    return np.array([scale[p] for p in phases]) * proxy


def calibrate_lm_from(
    source: str | Path,
    *,
    base: str | HardwareProfile = "h100-sxm",
    skip_bad: bool = False,
    progress: Callable[[int, int, str], None] = lambda done, total, name: None,
    **settings: Any,
) -> CalibrationResult:
    """Fit a timed profile to a per-token table; see the module docstring for the method.
    ``settings`` are the fields of :class:`~energyprune.energy.calibration.fit.FitSpec`; rows
    are held out by model."""
    spec = build(FitSpec, **settings)
    hw = load_hardware(base)
    if not hw.timed:
        raise ConfigError(
            f"--base {hw.name} gives no peak rates or static power; per-token calibration "
            "fits them: use a timed profile such as h100-sxm or a100-sxm"
        )
    rows, bad = read_token_table(source)
    observed, models = [], {}
    for i, row in enumerate(rows):
        progress(i, len(rows), row.model)
        try:
            observed.append(_observe(row, hw, models))
        except EnergyPruneError as e:
            bad.append(BadRow(row.where, str(e), row.order))
    if bad and not skip_bad:
        shown = "; ".join(str(b) for b in bad[:5])
        raise ConfigError(
            f"{len(bad)} bad measurement row(s): {shown}; fix them, or pass "
            "--skip-bad to fit without them"
        )
    if len(observed) < 4:
        raise ConfigError(f"calibration needs at least 4 measured rows, got {len(observed)}")
    cut = split([o.row.model for o in observed], spec.heldout_fraction, spec.seed, spec.split)
    eff, names, solved = _fit(observed, hw, list(cut.train), spec)
    name = spec.name or f"calibrated-{Path(source).stem}"
    fitted = _profile(hw, eff, names, solved.solution, name)
    progress(len(rows), len(rows), "fit")
    report = _report(observed, fitted, hw, cut, eff, bad)
    report.update(split_report(cut, spec.split), shrink=solved.shrink)
    report["not_calibrated"] = sorted(set(hw.coefficients()) - set(names))
    return CalibrationResult(replace(fitted, calibration=_summary(report)), report)


def _report(observed, fitted, base, cut: Split, eff, bad) -> dict[str, Any]:
    import time

    held, train = list(cut.held), list(cut.train)
    y = np.array([o.row.joules for o in observed])
    flops = np.array([o.flops for o in observed])
    groups = np.array([f"{o.row.device}/{o.row.dtype}" for o in observed])
    report: dict[str, Any] = {}
    predictors = {
        "": _predict(observed, fitted, eff),
        "baseline_": _baseline(observed, train),
        "base_": _predict(observed, base),
    }
    for prefix, values in predictors.items():
        report.update(
            {
                prefix + k: v
                for k, v in fidelity(values[held], y[held], flops[held], groups[held]).items()
            }
        )
    devices = sorted({o.row.device for o in observed if o.row.device}) or ["unnamed device"]
    report.update(
        baseline="J/token proportional to active parameters / batch (one constant per phase)",
        base_profile=base.name,
        device=", ".join(devices),
        date=time.strftime("%Y-%m-%d"),
        measured_with=f"{len(observed)} per-token rows",
        quantity="joules per token",
        fitted_column="joules_per_token",
        fit="per-token",
        n_train=len(train),
        n_heldout=len(held),
        n_close_pairs_heldout=n_close_pairs(flops[held], groups[held]),
        compute_efficiency=eff[0],
        bandwidth_efficiency=eff[1],
        static_w=fitted.static_w,
        bad_rows=[str(b) for b in bad],
        rows=[
            {
                "model": o.row.model,
                **o.row.regime.to_dict(),
                "gpus": o.row.gpus,
                "heldout": i in held,
                "measured_j_per_token": float(y[i]),
                "predicted_j_per_token": float(predictors[""][i]),
                "baseline_j_per_token": float(predictors["baseline_"][i]),
            }
            for i, o in enumerate(observed)
        ],
    )
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = (
        *("pairwise_agreement", "mape", "baseline_mape", "base_mape", "compute_efficiency"),
        *("bandwidth_efficiency", "static_w", "n_train", "n_heldout", "device", "date"),
    )
    return {k: report[k] for k in keys}
