"""How well a predictor orders and sizes measured energy: the figures a calibration reports.

A pruning decision compares two nearby configurations, so the figure that matters most is
**pairwise agreement**: the share of pairs the predictor orders like the meter. Pairs are only
formed within a group (same device, batch size and dtype), and **close pairs** (MACs within
2×) are reported on their own, because they are where MACs alone fail and where pruning choices
actually lie. MAPE says how far off the absolute figure is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CLOSE_PAIR_RATIO",
    "fidelity",
    "mape",
    "n_close_pairs",
    "pairwise_agreement",
]

#: Two rows form a close pair when their MACs are within this ratio.
CLOSE_PAIR_RATIO = 2.0


_BLOCK = 1024  # rows compared at once (bounds memory at a few MB per block)


def _blocks(groups: Sequence[str]):
    """(rows i, rows j, upper-triangle mask) blocks covering every same-group pair i < j."""
    groups = np.asarray(groups)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        for a in range(0, len(idx), _BLOCK):
            rows = idx[a : a + _BLOCK]
            upper = np.arange(a, a + len(rows))[:, None] < np.arange(len(idx))[None, :]
            yield rows, idx, upper


def _close(macs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    lo = np.minimum(macs[i][:, None], macs[j][None, :])
    hi = np.maximum(macs[i][:, None], macs[j][None, :])
    return (lo > 0) & (hi <= CLOSE_PAIR_RATIO * lo)


def n_close_pairs(macs: Sequence[float], groups: Sequence[str]) -> int:
    """How many same-group pairs have MACs within :data:`CLOSE_PAIR_RATIO` of each other."""
    macs = np.asarray(macs, dtype=float)
    return sum(int((upper & _close(macs, i, j)).sum()) for i, j, upper in _blocks(groups))


def pairwise_agreement(
    predicted: Sequence[float],
    measured: Sequence[float],
    groups: Sequence[str],
    macs: Sequence[float] | None = None,
) -> float:
    """Fraction of same-group pairs that ``predicted`` orders like ``measured`` (ties: half);
    given ``macs``, of the close pairs only."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    macs = None if macs is None else np.asarray(macs, float)
    score, n = 0.0, 0
    for i, j, upper in _blocks(groups):
        m = np.sign(measured[i][:, None] - measured[j][None, :])
        p = np.sign(predicted[i][:, None] - predicted[j][None, :])
        keep = upper & (m != 0)
        if macs is not None:
            keep &= _close(macs, i, j)
        n += int(keep.sum())
        score += float(np.where(p == 0, 0.5, (p == m).astype(float))[keep].sum())
    return score / n if n else float("nan")


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error (as a fraction)."""
    return float(np.mean(np.abs(predicted - measured) / measured))


def fidelity(
    predicted: np.ndarray, measured: np.ndarray, macs: np.ndarray, groups: np.ndarray
) -> dict[str, float]:
    """Agreement on all and on close pairs, and MAPE, of ``predicted`` against ``measured``."""
    return {
        "pairwise_agreement": pairwise_agreement(predicted, measured, groups),
        "close_pair_agreement": pairwise_agreement(predicted, measured, groups, macs),
        "mape": mape(predicted, measured),
    }
