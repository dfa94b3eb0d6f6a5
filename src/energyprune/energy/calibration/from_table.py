"""Calibrate from measurements made anywhere: fit a profile to a measurement table.

The table (:mod:`energyprune.energy.calibration.tables`) is read, each distinct (model, weights,
input shape, dtype) is built and traced once, and the rows go through the same fit as live
calibration (:mod:`energyprune.energy.calibration.fit`). Rows that cannot be used
(an unparsable model, a shape the model refuses, a non-positive figure) are reported by line;
the fit goes on without them only when asked to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from energyprune.energy.calibration.fit import FitSpec
from energyprune.energy.calibration.live import fit_observations
from energyprune.energy.calibration.observations import CalibrationResult, Observation
from energyprune.energy.calibration.tables import FITTABLE, BadRow, Row, read_table
from energyprune.energy.calibration.timed_fit import TimedRow, fit_timed_observations
from energyprune.energy.hardware.kernel_time import PricedOp
from energyprune.energy.hardware.profile import HardwareProfile, load_hardware
from energyprune.energy.pricing.features import op_amounts
from energyprune.errors import ConfigError, EnergyPruneError, first_line
from energyprune.models.layers import TORCH_DTYPES
from energyprune.models.placement import example_input
from energyprune.models.zoo import build_model, load_weights
from energyprune.options import build

__all__ = ["Resolve", "calibrate_from", "resolve_model"]

#: ``(model spec, weights or None) -> module``; the CLI's resolver also opens saved folders.
Resolve = Callable[[str, "str | None"], nn.Module]
_Key = tuple[str, "str | None", tuple[int, ...], str]
_SHOWN = 5


def resolve_model(spec: str, weights: str | None) -> nn.Module:
    """A built-in, torchvision or ``module:factory`` model, or one ``torch.nn`` constructor."""
    if Path(spec).is_dir():  # rebuilding a saved pruned model is the pruning layer's job
        raise ConfigError(
            f"'{spec}' is a folder (a saved model), which this resolver cannot rebuild; use "
            "`energyprune calibrate --from`, or pass resolve=lambda spec, weights: "
            "energyprune.load(spec)[0]"
        )
    model = build_model(spec).model
    if weights:
        load_weights(model, weights)
    return model


def calibrate_from(
    source: str | Path,
    *,
    base: str | HardwareProfile = "gpu-generic",
    column: str = "joules_per_sample",
    skip_bad: bool = False,
    resolve: Resolve = resolve_model,
    progress: Callable[[int, int, str], None] = lambda done, total, name: None,
    **settings: Any,
) -> CalibrationResult:
    """Fit ``base``'s coefficients to the rows of a measurement table (file or folder).

    Args:
        column: the measured quantity to fit: ``joules_per_sample``, or ``latency_ms`` where
            wall-clock latency stands in for a meter (the profile then says so).
        skip_bad: fit without the bad rows (listed in the report) instead of refusing.
        resolve: builds a row's model; the default knows every spec but saved folders.
        settings: the fields of :class:`~energyprune.energy.calibration.fit.FitSpec`
            (``heldout_fraction``, ``seed``, ``split``, ``energy_factor``, ``shrink``, ``name``).

    Raises:
        ConfigError: bad settings, bad rows without ``skip_bad`` (each named by file and
            line), or too few usable rows.
    """
    spec = build(FitSpec, **settings)
    hw = load_hardware(base)
    rows, bad = read_table(source, column)
    observations, timed, unusable = _observe_rows(rows, hw, resolve, progress)
    bad = sorted(bad + unusable, key=lambda b: b.order)
    if bad and not skip_bad:
        raise ConfigError(_bad_message(bad))
    prefix = "calibrated" if column == "joules_per_sample" else "latency-standin"
    devices = sorted({r.device for r in rows if r.device}) or ["unnamed device"]
    what = f" ({rows[0].kind} joules)" if column == "joules_per_sample" else " (latency)"
    context = dict(
        device=", ".join(devices),
        measured_with=f"{len(observations)} rows of {Path(source).name}{what}",
        quantity=FITTABLE[column],
        fitted_column=column,
        bad_rows=[str(b) for b in bad],
    )
    spec = replace(spec, name=spec.name or f"{prefix}-{Path(source).stem}")
    if column == "joules_per_sample" and hw.timed and timed is not None:
        return fit_timed_observations(hw, observations, timed, spec, **context)
    return fit_observations(hw, observations, spec, **context)


def _observe_rows(
    rows: list[Row], hw: HardwareProfile, resolve: Resolve, progress
) -> tuple[list[Observation], list[TimedRow] | None, list[BadRow]]:
    """Observations of the usable rows (and, when every one has a latency, their per-op
    timing rows); each distinct configuration is traced once."""
    traced: dict[_Key, tuple[tuple[PricedOp, ...], int] | str] = {}
    observations, timed, bad = [], [], []
    for i, row in enumerate(rows):
        progress(i, len(rows), row.model)
        key = (row.model, row.weights, row.input_shape, row.dtype)
        if key not in traced:
            traced[key] = _trace_row(row, hw, resolve)
        found = traced[key]
        if isinstance(found, str):
            bad.append(BadRow(row.where, found, row.order))
            continue
        ops, macs = found
        batch = row.input_shape[0]
        timing = TimedRow(ops, batch, row.latency_s or 0.0, row.value)
        timed.append(timing)
        name = f"{row.model} @ {'x'.join(map(str, row.input_shape))}"
        observations.append(
            Observation(
                name,
                row.group,
                timing.features(),
                macs,
                row.value,
                batch,
                row.dtype,
                family=row.family or row.model,
            )
        )
    progress(len(rows), len(rows), "fit")
    with_latency = all(t.latency_s > 0 for t in timed)
    return observations, timed if timed and with_latency else None, bad


def _trace_row(
    row: Row, hw: HardwareProfile, resolve: Resolve
) -> tuple[tuple[PricedOp, ...], int] | str:
    """Per-op feature amounts of one forward and MACs per sample of a row's configuration, or
    why it cannot be traced."""
    try:
        model = resolve(row.model, row.weights).eval().to(TORCH_DTYPES[row.dtype])
    except EnergyPruneError as e:
        return str(e)
    example = example_input(model, row.input_shape)
    try:
        return op_amounts(model, example, hw)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        return f"{row.model} refused an input of shape {list(row.input_shape)} ({first_line(e)})"


def _bad_message(bad: list[BadRow]) -> str:
    shown = "; ".join(str(b) for b in bad[:_SHOWN])
    more = f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    return (
        f"{len(bad)} bad measurement row(s): {shown}{more}; fix them, or pass --skip-bad to fit "
        "without them (they are listed in the report)"
    )
