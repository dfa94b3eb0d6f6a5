"""How a fitted profile is judged: held-out ordering and error of the fit, plain MACs and the
uncalibrated base, on the same rows; and the figures a profile carries."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from energyprune.energy.calibration.fidelity import fidelity, n_close_pairs
from energyprune.energy.calibration.observations import Observation
from energyprune.energy.calibration.split import Split
from energyprune.energy.hardware.profile import HardwareProfile

__all__ = ["SUMMARY_KEYS", "fidelity_report", "on_both_splits", "split_report", "summary"]

SUMMARY_KEYS = (
    "pairwise_agreement",
    "close_pair_agreement",
    "macs_pairwise_agreement",
    "macs_close_pair_agreement",
    "base_pairwise_agreement",
    "base_close_pair_agreement",
    "mape",
    "macs_mape",
    "base_mape",
    "n_train",
    "n_heldout",
    "split",
    "heldout_families",
    "device",
    "date",
)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline fidelity figures a fitted profile carries (they travel in its YAML)."""
    return {k: report[k] for k in SUMMARY_KEYS if k in report}


def on_both_splits(
    judge: Callable[[str], tuple[HardwareProfile, dict[str, Any]]],
    how: str,
    families: Sequence[str],
) -> tuple[HardwareProfile, dict[str, Any]]:
    """``judge(how)`` (a fit on one split and its report), with the headline figures of the
    same fit on the other split beside it (None where the rows are one family)."""
    fitted, report = judge(how)
    other = "random" if how == "group" else "group"
    report[f"{other}_split"] = summary(judge(other)[1]) if len(set(families)) > 1 else None
    return fitted, report


def split_report(split: Split, how: str) -> dict[str, Any]:
    """How the rows were split: by family (the default) or at random, and which were held."""
    return {
        "split": how,
        "heldout_families": list(split.held_families),
        "n_heldout_families": len(split.held_families),
    }


def fidelity_report(
    observations: Sequence[Observation],
    predicted: np.ndarray,
    base_predicted: np.ndarray,
    split: Split,
) -> dict[str, Any]:
    """Held-out fidelity of the fit, of plain MACs and of the base profile, and every row."""
    held, train = list(split.held), list(split.train)
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
                "family": o.family,
                "batch_size": o.batch_size,
                "dtype": o.dtype,
                "heldout": i in split.held,
                "measured_j_per_sample": float(y[i]),
                "predicted_j_per_sample": float(predicted[i]),
                "macs_per_sample": int(macs[i]),
            }
            for i, o in enumerate(observations)
        ],
    )
    return report
