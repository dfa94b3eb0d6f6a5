"""How well a predictor orders and sizes measured energy: the figures a calibration reports.

A pruning decision compares two nearby configurations, so the figure that matters most is
**pairwise agreement**: the share of pairs the predictor orders like the meter. Pairs are only
formed within a group (same device, batch size and dtype), and **close pairs** (MACs within
2×) are reported on their own, because they are where MACs alone fail and where pruning choices
actually lie. MAPE says how far off the absolute figure is.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = ["CLOSE_PAIR_RATIO", "close_pairs", "fidelity", "mape", "pairwise_agreement"]

#: Two rows form a close pair when their MACs are within this ratio.
CLOSE_PAIR_RATIO = 2.0


def _pairs(groups: Sequence[str]) -> list[tuple[int, int]]:
    return [(i, j) for i, j in combinations(range(len(groups)), 2) if groups[i] == groups[j]]


def close_pairs(macs: Sequence[float], groups: Sequence[str]) -> list[tuple[int, int]]:
    """Same-group pairs whose MACs are within :data:`CLOSE_PAIR_RATIO` of each other."""
    out = []
    for i, j in _pairs(groups):
        lo, hi = sorted((float(macs[i]), float(macs[j])))
        if lo > 0 and hi / lo <= CLOSE_PAIR_RATIO:
            out.append((i, j))
    return out


def _agreement(predicted, measured, pairs: Sequence[tuple[int, int]]) -> float:
    score, n = 0.0, 0
    for i, j in pairs:
        if measured[i] == measured[j]:
            continue
        n += 1
        p = np.sign(predicted[i] - predicted[j])
        score += 0.5 if p == 0 else float(p == np.sign(measured[i] - measured[j]))
    return score / n if n else float("nan")


def pairwise_agreement(
    predicted: Sequence[float], measured: Sequence[float], groups: Sequence[str]
) -> float:
    """Fraction of same-group pairs that ``predicted`` orders like ``measured`` (ties: half)."""
    return _agreement(predicted, measured, _pairs(groups))


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error (as a fraction)."""
    return float(np.mean(np.abs(predicted - measured) / measured))


def fidelity(
    predicted: np.ndarray, measured: np.ndarray, macs: np.ndarray, groups: np.ndarray
) -> dict[str, float]:
    """Agreement on all and on close pairs, and MAPE, of ``predicted`` against ``measured``."""
    return {
        "pairwise_agreement": pairwise_agreement(predicted, measured, groups),
        "close_pair_agreement": _agreement(predicted, measured, close_pairs(macs, groups)),
        "mape": mape(predicted, measured),
    }
