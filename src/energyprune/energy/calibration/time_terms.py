"""The time model's terms as a vector, priced for many rows at once, and their least-squares fit
(stage 1 of :mod:`energyprune.energy.calibration.timed_fit`).

:class:`OpArrays` flattens the training rows' ops into arrays: seconds at the base's peaks, kind,
conv variant, outputs. :meth:`OpArrays.seconds` then prices every row under a
:class:`TimeTerms` exactly as :func:`energyprune.energy.pricing.roofline.op_seconds` prices one op
under the profile :meth:`TimeTerms.apply` builds. A test holds the two to the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from energyprune.energy.hardware.kernel_time import CONV_VARIANTS, KernelTiming, PricedOp
from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.roofline import op_rates

__all__ = ["OWN_LAUNCH", "OpArrays", "TimeTerms", "TimedRow", "fit_terms"]

#: Op kinds that keep the profile's plain ``launch_s``; every other launched kind (a layout
#: copy, a pooling, an unfused norm) gets its own launch time when the rows exercise it.
OWN_LAUNCH = ("conv", "matmul", "attention")
#: Bounds of each fitted term (seconds, shares of the peak, output elements, FLOPs per weight);
#: no conv variant runs faster per FLOP than a dense conv (efficiency <= 1).
_BOUNDS = {
    "compute_efficiency": (1e-4, 1.0),
    "bandwidth_efficiency": (1e-4, 1.0),
    "forward_s": (1e-9, 1.0),
    "launch_s": (1e-9, 1.0),
    "occupancy_outputs": (1e-3, 1e9),
    "efficiency": (1e-3, 1.0),
    "grouped_weight_flops": (1e-6, 1e6),
    "kind_launch_s": (1e-9, 1.0),
}
_OCCUPANCY_STARTS = (1e1, 1e3, 1e5)


@dataclass(frozen=True)
class TimedRow:
    """One measured configuration: its ops (feature amounts and timing) over one forward, its
    batch, the measured seconds per forward and gross joules per sample."""

    ops: tuple[PricedOp, ...]
    batch: int
    latency_s: float
    joules: float

    def features(self) -> Counter[str]:
        """Per-sample energy features."""
        total: Counter[str] = Counter()
        for op in self.ops:
            total.update(op.amounts)
        return Counter({k: v / self.batch for k, v in total.items()})


@dataclass(frozen=True)
class TimeTerms:
    """Every fitted term of the time model (see energy/calibration/timed_fit.py)."""

    compute_efficiency: float
    bandwidth_efficiency: float
    forward_s: float
    launch_s: float
    occupancy_outputs: float = 0.0
    efficiency: dict[str, float] = field(default_factory=dict)
    grouped_weight_flops: float = 0.0
    kind_launch_s: dict[str, float] = field(default_factory=dict)

    def apply(self, base: HardwareProfile) -> HardwareProfile:
        """``base`` with these terms: peaks scaled by the efficiencies, the runtime replaced
        (its epilogue fusion kept: a property of the runtime, not a fitted number)."""
        runtime = KernelTiming(
            base.runtime.fuse_epilogues,
            self.occupancy_outputs,
            dict(self.efficiency),
            self.grouped_weight_flops,
            dict(self.kind_launch_s),
        )
        return replace(
            base,
            peak_flops={d: v * self.compute_efficiency for d, v in base.peak_flops.items()},
            bandwidth={k: v * self.bandwidth_efficiency for k, v in base.bandwidth.items()},
            launch_s=self.launch_s,
            forward_s=self.forward_s,
            runtime=runtime,
        )


@dataclass(frozen=True)
class OpArrays:
    """The ops of several rows, flattened: ``row`` says whose each op is."""

    row: np.ndarray
    compute: np.ndarray  # seconds at the base's peak FLOP/s
    memory: np.ndarray  # seconds at the base's bandwidth
    launches: np.ndarray
    kind: np.ndarray
    variant: np.ndarray
    outputs: np.ndarray
    weights_per_mac: np.ndarray  # weights x batch / MACs (a grouped conv's per-weight pass)
    n_rows: int

    @classmethod
    def of(cls, rows: Sequence[TimedRow], hw: HardwareProfile) -> OpArrays:
        values = []
        for i, r in enumerate(rows):
            for op in r.ops:
                compute, memory = op_rates(op.amounts, hw)
                macs = sum(
                    v
                    for k, v in op.amounts.items()
                    if k.startswith("mac:") and k != "mac:unaligned"
                )
                t = op.timing
                per_mac = t.weights * t.batch / macs if macs else 0.0
                launches = op.amounts.get("launch", 0)
                values.append((i, compute, memory, launches, t.kind, t.variant, t.outputs, per_mac))
        columns = list(zip(*values, strict=True)) if values else [()] * 8
        return cls(*(np.array(c) for c in columns), n_rows=len(rows))

    def _sum(self, per_op: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=per_op, minlength=self.n_rows)

    def launches_per_row(self) -> np.ndarray:
        return self._sum(self.launches.astype(float))

    def roof(self, e_c: float, e_m: float) -> np.ndarray:
        """Each row's plain roofline seconds (no launch, no fixed time, no runtime terms)."""
        return self._sum(np.maximum(self.compute / e_c, self.memory / e_m))

    def seconds(self, t: TimeTerms) -> np.ndarray:
        """Each row's seconds per forward under ``t``."""
        slow = np.ones_like(self.compute)
        for variant, eff in t.efficiency.items():
            slow = np.where(self.variant == variant, slow / eff, slow)
        if t.grouped_weight_flops:
            grouped = self.variant == "grouped"
            slow = np.where(
                grouped, slow * (1 + t.grouped_weight_flops * self.weights_per_mac), slow
            )
        if t.occupancy_outputs:
            out = np.maximum(self.outputs, 1)
            slow = np.where(self.outputs > 0, slow * (out + t.occupancy_outputs) / out, slow)
        launch = np.full_like(self.compute, t.launch_s)
        for kind, seconds in t.kind_launch_s.items():
            launch = np.where(self.kind == kind, seconds, launch)
        roof = np.maximum(
            self.compute * slow / t.compute_efficiency, self.memory / t.bandwidth_efficiency
        )
        return t.forward_s + self._sum(roof + launch * self.launches)

    def exercised(self) -> tuple[list[str], list[str]]:
        """(conv variants with compute, launched kinds that get their own launch time)."""
        variants = sorted({str(v) for v in self.variant[self.compute > 0]} & set(CONV_VARIANTS))
        kinds = sorted({str(k) for k in self.kind[self.launches > 0]} - set(OWN_LAUNCH))
        return variants, kinds


def _pack(
    t: TimeTerms, variants: list[str], kinds: list[str], occupancy: bool
) -> tuple[list[str], list[float]]:
    names = ["compute_efficiency", "bandwidth_efficiency", "forward_s", "launch_s"]
    names += ["occupancy_outputs"] * occupancy
    values = [getattr(t, n) for n in names]
    names += [f"efficiency.{v}" for v in variants]
    values += [t.efficiency.get(v, 1.0) for v in variants]
    if "grouped" in variants:
        names.append("grouped_weight_flops")
        values.append(t.grouped_weight_flops or 1.0)
    names += [f"kind_launch_s.{k}" for k in kinds]
    values += [t.kind_launch_s.get(k, t.launch_s) for k in kinds]
    return names, values


def _unpack(names: list[str], values: np.ndarray, start: TimeTerms) -> TimeTerms:
    scalars, efficiency, launch = {}, dict(start.efficiency), dict(start.kind_launch_s)
    for name, value in zip(names, values.tolist(), strict=True):
        group, _, key = name.partition(".")
        {"efficiency": efficiency, "kind_launch_s": launch}.get(group, scalars)[key or name] = value
    return replace(start, efficiency=efficiency, kind_launch_s=launch, **scalars)


def fit_terms(
    arrays: OpArrays,
    latency: np.ndarray,
    start: TimeTerms,
    solver: Callable,
    occupancy: bool = True,
) -> tuple[TimeTerms, tuple[str, ...]]:
    """Every term the rows exercise, by ``solver`` (scipy's least_squares) on log relative
    error, from ``start`` and (with the ``occupancy`` term) from each of a few occupancy
    starts; the best fit and its terms' names."""
    variants, kinds = arrays.exercised()
    start = start if occupancy else replace(start, occupancy_outputs=0.0)
    names, values = _pack(start, variants, kinds, occupancy)
    bounds = np.log([_BOUNDS[n.partition(".")[0]] for n in names]).T
    best, best_cost = start, np.inf
    for occupancy_start in _OCCUPANCY_STARTS if occupancy else (None,):
        x0 = np.clip(np.log(np.maximum(values, 1e-12)), bounds[0] + 1e-9, bounds[1] - 1e-9)
        if occupancy_start is not None:
            x0[names.index("occupancy_outputs")] = np.log(occupancy_start)

        def residual(x: np.ndarray) -> np.ndarray:
            return np.log(arrays.seconds(_unpack(names, np.exp(x), start)) / latency)

        solution = solver(residual, x0, bounds=(bounds[0], bounds[1]))
        if solution.cost < best_cost:
            best, best_cost = _unpack(names, np.exp(solution.x), start), solution.cost
    return best, tuple(names)
