"""Whether a timing or energy reading can be trusted: its spread, and other load on the machine.

A reading taken while other work shares the CPU is not a fact about the model (ResNet-20 pruned
to half its energy measured 1.02× *slower* than dense on a busy box; two near-identical trials
read 88 ms and 0.27 ms). A reading is **noisy** when

* the interquartile range of its repeats exceeds :data:`NOISY_IQR` of their median, or
* other processes used more than :data:`OTHER_LOAD_CORES` cores on average while it ran
  (machine-wide busy CPU time from ``/proc/stat`` minus this process's own; Linux only).

A noisy reading is reported with its reason and never drives a recommendation on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["NOISY_IQR", "OTHER_LOAD_CORES", "TOO_NOISY", "Noise", "iqr_fraction", "other_load"]

NOISY_IQR = 0.10
OTHER_LOAD_CORES = 0.5
TOO_NOISY = "too noisy to judge; rerun on an idle machine"
MIN_PROBE_S = 0.5  # /proc/stat counts in 10 ms ticks: a shorter block cannot tell
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system (idle iowait) irq softirq steal


def iqr_fraction(values: Sequence[float]) -> float:
    """Interquartile range over median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else float("inf")


@dataclass(frozen=True)
class Noise:
    """The spread of a reading's repeats and the other load while it ran (cores; None where
    the platform does not say)."""

    spread: float
    other_load_cores: float | None = None

    @property
    def reason(self) -> str | None:
        """Why the reading is noisy, or None when it is not."""
        why = []
        if self.spread > NOISY_IQR:
            why.append(f"spread {self.spread:.0%} of the median (> {NOISY_IQR:.0%})")
        if self.other_load_cores is not None and self.other_load_cores > OTHER_LOAD_CORES:
            why.append(f"other processes used {self.other_load_cores:.1f} cores")
        return "; ".join(why) or None

    @property
    def noisy(self) -> bool:
        return self.reason is not None

    def to_dict(self) -> dict[str, float | bool | str | None]:
        return {**asdict(self), "noisy": self.noisy, "reason": self.reason}


def _busy_seconds() -> float | None:
    """Machine-wide busy CPU seconds since boot, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:]
        ticks = sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class _Load:
    cores: float | None = None


@contextmanager
def other_load() -> Iterator[_Load]:
    """Measure, over the ``with`` block, the cores other processes kept busy (``.cores``)."""
    found = _Load()
    busy, own, wall = _busy_seconds(), _own_seconds(), time.perf_counter()
    try:
        yield found
    finally:
        after, elapsed = _busy_seconds(), time.perf_counter() - wall
        if busy is not None and after is not None and elapsed >= MIN_PROBE_S:
            others = (after - busy) - (_own_seconds() - own)
            found.cores = max(others, 0.0) / elapsed
