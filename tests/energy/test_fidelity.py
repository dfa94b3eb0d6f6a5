"""Agreement figures equal their definition, pair by pair (the fast path is vectorised)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from energyprune.energy.calibration.fidelity import (
    CLOSE_PAIR_RATIO,
    n_close_pairs,
    pairwise_agreement,
)


def by_definition(predicted, measured, groups, macs=None) -> tuple[float, int]:
    score, n, close = 0.0, 0, 0
    for i, j in combinations(range(len(measured)), 2):
        if groups[i] != groups[j]:
            continue
        lo, hi = sorted((macs[i], macs[j])) if macs is not None else (1, 1)
        is_close = lo > 0 and hi <= CLOSE_PAIR_RATIO * lo
        close += is_close
        if measured[i] == measured[j] or not is_close:
            continue
        n += 1
        p = np.sign(predicted[i] - predicted[j])
        score += 0.5 if p == 0 else float(p == np.sign(measured[i] - measured[j]))
    return (score / n if n else float("nan")), close


rows = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 9), st.sampled_from("ab")),
    min_size=2,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_agreement_equals_its_definition(data):
    predicted, measured, macs, groups = (np.array(c) for c in zip(*data, strict=True))
    for m in (None, macs.astype(float)):
        expected, _ = by_definition(predicted, measured, groups, m)
        got = pairwise_agreement(predicted, measured, groups, m)
        assert (np.isnan(got) and np.isnan(expected)) or got == expected
    assert n_close_pairs(macs, groups) == by_definition(predicted, measured, groups, macs)[1]
