"""How a per-token fit is judged: held-out J/token and inter-token latency error, by model,
beside the uncalibrated base and a baseline that needs no tracer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from energyprune.energy.calibration.fidelity import mape, pairwise_agreement
from energyprune.energy.calibration.fit import EnergySolve, FitSpec
from energyprune.energy.calibration.split import Split
from energyprune.energy.calibration.tables import BadRow
from energyprune.energy.calibration.token_rows import RowArrays, TimeTerms, TokenFit, predict
from energyprune.energy.hardware.profile import HardwareProfile

__all__ = ["BASELINE", "token_report"]

BASELINE = "J/token proportional to active parameters / batch (one constant per phase)"


def _baseline(arrays: Sequence[RowArrays], train: Sequence[int]) -> np.ndarray:
    """J/token = c_phase x active parameters / batch, c fitted on ``train`` rows."""
    proxy = np.array([a.active_params / a.row.regime.batch for a in arrays])
    y = np.array([a.row.joules for a in arrays])
    phases = [a.row.regime.phase for a in arrays]
    scale = {}
    for phase in set(phases):
        idx = [i for i in train if phases[i] == phase] or list(train)
        scale[phase] = float(np.median(y[idx] / proxy[idx]))
    return np.array([scale[p] for p in phases]) * proxy


def _baseline_held(arrays, cut: Split, each: bool) -> np.ndarray:
    """The baseline's predictions, each row's from rows of other models when ``each``."""
    if not each:
        return _baseline(arrays, cut.train)
    families = [a.row.family for a in arrays]
    out = np.zeros(len(arrays))
    for family in set(families):
        held = [i for i, f in enumerate(families) if f == family]
        out[held] = _baseline(arrays, [i for i, f in enumerate(families) if f != family])[held]
    return out


def _base(arrays: Sequence[RowArrays], hw: HardwareProfile) -> tuple[np.ndarray, np.ndarray]:
    """J/token and latency under the uncalibrated base: a fit that fitted nothing."""
    t = TimeTerms.of(hw)
    powers = np.array([hw.static_w, hw.active_w]) * 1e12
    energy = predict(arrays, range(len(arrays)), hw, TokenFit(t, (), EnergySolve(powers, 0.0, {})))
    return energy, np.array([a.itl(t) for a in arrays])


def _errors(pred: np.ndarray, itl: np.ndarray, arrays, idx: Sequence[int]) -> dict[str, Any]:
    idx = list(idx)
    y = np.array([arrays[i].row.joules for i in idx])
    timed = [i for i in idx if arrays[i].row.itl_s]
    measured_itl = np.array([arrays[i].row.itl_s for i in timed])
    return {
        "mape": mape(pred[idx], y),
        "itl_mape": mape(itl[timed], measured_itl) if timed else None,
        "spearman": float(spearmanr(pred[idx], y).statistic) if len(idx) > 2 else None,
        "n_rows": len(idx),
    }


def _name(model: str) -> str:
    """A model's short name: its config file's stem (hf:path/qwen3-8b.json -> qwen3-8b)."""
    return Path(model.removeprefix("hf:")).stem


def _by_model(arrays, held: Sequence[int], energy, itl) -> dict[str, dict[str, Any]]:
    out = {}
    for family in sorted({arrays[i].row.family for i in held}):
        rows = [i for i in held if arrays[i].row.family == family]
        out[_name(family)] = _errors(energy, itl, arrays, rows)
    return out


def _row(a: RowArrays, i: int, held: set[int], predicted: dict[str, np.ndarray]) -> dict:
    r = a.row
    return {
        "model": _name(r.model),
        **r.regime.to_dict(),
        "tensor_parallel": r.tensor_parallel,
        "expert_parallel": r.expert_parallel,
        "heldout": i in held,
        "measured_j_per_token": r.joules,
        "measured_itl_ms": r.itl_s * 1e3 if r.itl_s else None,
        **{k: float(v[i]) for k, v in predicted.items()},
    }


def token_report(
    arrays, cut: Split, spec: FitSpec, pred, hw: HardwareProfile, fit, bad: list[BadRow]
):
    """The report of a per-token fit; ``pred`` = (J/token, latency) of every row, held-out rows
    predicted by a fit that never saw them."""
    energy, itl = pred
    each = spec.split == "each"
    held = list(cut.held)
    baseline = _baseline_held(arrays, cut, each)
    base_energy, base_itl = _base(arrays, hw)
    y = np.array([a.row.joules for a in arrays])
    groups = np.array(["all"] * len(arrays))
    t, sol = fit.terms, fit.solved.solution
    report: dict[str, Any] = {
        "fit": "per-token",
        "quantity": "joules per output token and inter-token latency",
        "fitted_column": "joules_per_token",
        "split": spec.split,
        "heldout_families": [_name(f) for f in cut.held_families],
        **_errors(energy, itl, arrays, held),
        "pairwise_agreement": pairwise_agreement(energy[held], y[held], groups[held]),
        "baseline": BASELINE,
        "baseline_mape": mape(baseline[held], y[held]),
        "base_profile": hw.name,
        "base_mape": mape(base_energy[held], y[held]),
        "base_itl_mape": _errors(base_energy, base_itl, arrays, held)["itl_mape"],
        "by_model": _by_model(arrays, held, energy, itl),
        "compute_efficiency": t.compute_efficiency,
        "bandwidth_efficiency": t.bandwidth_efficiency,
        "graph_kernel_s": t.kernel_floor_s,
        "graph_step_s": t.step_s,
        "static_w": float(sol[-2]) * 1e-12,
        "active_w": float(sol[-1]) * 1e-12,
        "shrink": fit.solved.shrink,
        "not_calibrated": sorted(set(hw.coefficients()) - set(fit.names)),
        "n_train": len(cut.train),
        "n_heldout": len(held),
        "device": ", ".join(sorted({a.row.device for a in arrays if a.row.device})) or "unnamed",
        "date": time.strftime("%Y-%m-%d"),
        "measured_with": f"{len(arrays)} per-token rows",
        "bad_rows": [str(b) for b in bad],
    }
    predicted = {"predicted_j_per_token": energy, "predicted_itl_ms": itl * 1e3}
    report["rows"] = [_row(a, i, set(held), predicted) for i, a in enumerate(arrays)]
    keys = ("mape", "itl_mape", "spearman", "base_mape", "baseline_mape", "split", "n_train")
    report["summary"] = {k: report[k] for k in (*keys, "n_heldout", "by_model", "device", "date")}
    return report
