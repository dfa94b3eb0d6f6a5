"""A per-token row as the fit sees it: each pass's fused kernels, energy features and
collectives, priced exactly as :func:`energyprune.profile_lm` prices them.

For a profile whose peaks are the base's times (``e_c``, ``e_m``), whose graph kernels last at
least ``f`` and whose steps carry ``F`` seconds of host time, pass ``p`` of a row takes

    T_p = F + Σ_kernels max(compute / e_c, memory / e_m, f) + collectives

and one token costs Σ_p share_p × (G × [Σ_f c_f × amount_f + static_w × T_p + active_w ×
(T_p - F)] + link energy), with G the tensor-parallel GPUs each paying a whole token's share.
The time terms enter non-linearly; with them fixed, the energy is linear in the coefficients.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from energyprune.energy.calibration.fit import EnergySolve
from energyprune.energy.calibration.token_table import TokenRow
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.lm.expert_parallel import all_to_all
from energyprune.energy.lm.graphs import kernels
from energyprune.energy.lm.per_token import TracedPass, lm_traces, served
from energyprune.energy.lm.serving import Serving
from energyprune.energy.lm.tensor_parallel import pass_all_reduce
from energyprune.energy.pricing.features import itemsize, op_features
from energyprune.models.layers import TORCH_DTYPES

__all__ = [
    "PassArrays",
    "RowArrays",
    "TimeTerms",
    "TokenFit",
    "predict",
    "row_arrays",
    "unfitted",
]


@dataclass(frozen=True)
class TimeTerms:
    """The time terms a fit chooses: shares of the base's peaks, the graph kernel floor and
    the host's seconds per step."""

    compute_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    kernel_floor_s: float = 0.0
    step_s: float = 0.0

    @classmethod
    def of(cls, hw: HardwareProfile) -> TimeTerms:
        """The profile's own terms: its peaks as they are, its kernel floor and step time."""
        return cls(1.0, 1.0, hw.runtime.graph_kernel_s, hw.runtime.graph_step_s)


@dataclass(frozen=True)
class PassArrays:
    """One pass of a row: its share of a token, per-kernel seconds at the base's peaks, its
    energy features (one GPU) and its collectives (seconds, link joules)."""

    share: float
    phase: str
    compute: np.ndarray
    memory: np.ndarray
    features: Counter[str]
    comm_s: float = 0.0
    comm_j: float = 0.0

    def seconds(self, t: TimeTerms) -> float:
        kernels = np.maximum(
            np.maximum(self.compute / t.compute_efficiency, self.memory / t.bandwidth_efficiency),
            t.kernel_floor_s,
        )
        return t.step_s + float(kernels.sum()) + self.comm_s


@dataclass(frozen=True)
class RowArrays:
    """A row traced once; its latency and energy under any time terms and coefficients."""

    row: TokenRow
    gpus: int  # GPUs that each pay a whole token's share (tensor parallel)
    passes: tuple[PassArrays, ...]
    active_params: float

    def itl(self, t: TimeTerms) -> float:
        """Seconds of the decode pass the regime runs most: a step between two tokens."""
        decode = [p for p in self.passes if p.phase == "decode"] or list(self.passes)
        return max(decode, key=lambda p: p.share).seconds(t)

    def design(self, names: Sequence[str], t: TimeTerms) -> tuple[np.ndarray, float]:
        """The energy per token's row over ``names`` + static_w + active_w (pJ units), and the
        link energy no coefficient scales (J)."""
        feats = np.zeros(len(names))
        static = active = link = 0.0
        for p in self.passes:
            feats += p.share * self.gpus * np.array([p.features.get(n, 0.0) for n in names])
            seconds = p.seconds(t)
            static += p.share * self.gpus * seconds
            active += p.share * self.gpus * (seconds - t.step_s)
            link += p.share * p.comm_j
        return np.concatenate([feats, [static, active]]), link


def _collectives(row: TokenRow, model, traced: TracedPass, hw: HardwareProfile, dtype: str):
    """(seconds, link joules) of one pass's all-reduces or all-to-alls, as profile_lm adds."""
    single = TracedPass(traced.phase, traced.batch, traced.length, traced.count, 1.0, traced.trace)
    if row.tensor_parallel > 1:
        link = pass_all_reduce(hw, model, single, dtype, row.tensor_parallel)
        return link.seconds, link.energy_j
    if row.expert_parallel > 1:
        comm = all_to_all(hw, row.expert_parallel, [single], model.config, itemsize(dtype))
        return comm.seconds, comm.memory_j
    return 0.0, 0.0


def _features(trace, members, hw: HardwareProfile) -> Counter[str]:
    out: Counter[str] = Counter()
    for i in members:
        for name, amount in op_features(trace.records[i], hw, None).amounts.items():
            if name != "launch":  # graphs: no per-op launch
                out[name] += amount
    return out


def row_arrays(row: TokenRow, hw: HardwareProfile, models: dict[Any, Any]) -> RowArrays:
    """Trace ``row``'s regime as profile_lm does (its model in the dtype it ran in, split as it
    was) and keep what the fit needs, at ``hw``'s peaks."""
    from energyprune.models.hf import build_hf, read_hf_config

    key = (row.model, row.dtype)
    if key not in models:
        models[key] = build_hf(read_hf_config(row.model), TORCH_DTYPES[row.dtype])
    stored = Serving(tensor_parallel=row.tensor_parallel, expert_parallel=row.expert_parallel)
    model, regime = served(models[key], row.regime, stored)
    passes = []
    for traced in lm_traces(model, regime):
        ks = kernels(traced.trace, hw, None)
        members = [i for k in ks for i in k.members]
        comm_s, comm_j = _collectives(row, model, traced, hw, row.dtype)
        passes.append(
            PassArrays(
                traced.share,
                traced.phase,
                np.array([k.compute_s for k in ks]),
                np.array([k.memory_s for k in ks]),
                _features(traced.trace, members, hw),
                comm_s,
                comm_j,
            )
        )
    gpus = row.tensor_parallel
    return RowArrays(row, gpus, tuple(passes), _active_params(models[key]))


def _active_params(model) -> float:
    from energyprune.models.hf import moe_experts

    moe = moe_experts(model.config)
    total = 0.0
    for p in model.parameters():
        share = moe[1] / moe[0] if moe and p.dim() == 3 else 1.0  # an expert stack
        total += p.numel() * share
    return total


@dataclass(frozen=True)
class TokenFit:
    """A fit: its time terms, the coefficients it fitted (names), and the energy solve."""

    terms: TimeTerms
    names: tuple[str, ...]
    solved: EnergySolve


def unfitted(a: RowArrays, names: Sequence[str], hw: HardwareProfile) -> float:
    """J/token of the row's features the fit did not see, at the base's coefficients (as the
    written profile keeps them)."""
    coef = hw.coefficients()
    return a.gpus * sum(
        p.share * v * coef[k] * 1e-12
        for p in a.passes
        for k, v in p.features.items()
        if k in coef and k not in names
    )


def predict(arrays: Sequence[RowArrays], idx: Sequence[int], hw: HardwareProfile, fit: TokenFit):
    """J/token of rows ``idx`` under a fit, as the profile it writes prices them."""
    c = fit.solved.solution
    out = []
    for i in idx:
        x, link = arrays[i].design(fit.names, fit.terms)
        out.append(float(x @ c) * 1e-12 + link + unfitted(arrays[i], fit.names, hw))
    return np.array(out)
