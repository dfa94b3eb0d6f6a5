"""Measured energy and latency of a model's forward pass, with a written-down protocol.

The measurement protocol (docs/measurement.md): idle power first; warm-up; iterations per
window chosen so a window lasts >= ``min_window_s`` and >= 10x the counter's update period;
>= 5 windows, the device synchronised around each; median and IQR of joules per sample; gross
and idle-subtracted ("active") energy; per-iteration latency p50/p95 in a separate,
synchronised pass. Where no meter exists the result is ``measured: false`` and carries the
model's *estimate*, labelled as such.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from energyprune.deploy.runtime import Deployment, prepare
from energyprune.energy.measurement.meters import Meter, cpu_name, open_meter
from energyprune.energy.measurement.noise import Noise, iqr_fraction, other_load
from energyprune.energy.measurement.results import Measurement, Window
from energyprune.energy.tracing.tensors import dtype_name
from energyprune.errors import ConfigError, MeterError, MeterUnavailableError
from energyprune.options import build

if TYPE_CHECKING:
    from energyprune.energy.pricing.estimates import EnergyProfile

__all__ = [
    "Measurement",
    "MeasurementProtocol",
    "Protocol",
    "Window",
    "measure",
    "measure_step",
    "run_protocol",
]


@dataclass(frozen=True)
class MeasurementProtocol:
    """Measurement protocol settings (seconds).

    Attributes:
        min_window_s: shortest energy window (also >= 10x the meter's update period).
        windows: number of energy windows (>= 5 for a median and IQR worth reporting).
        warmup_s: warm-up time before anything is measured (>= 3 iterations).
        idle_s: length of the idle-power window, measured before the warm-up.
        max_latency_iters: cap on the synchronised per-iteration latency pass.
        clock / sleep: how time is read and waited (a simulated device in tests).
    """

    min_window_s: float = 1.0
    windows: int = 5
    warmup_s: float = 1.0
    idle_s: float = 2.0
    max_latency_iters: int = 200
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.windows < 1 or self.min_window_s <= 0 or self.warmup_s < 0 or self.idle_s < 0:
            raise ConfigError(
                "protocol needs windows >= 1, min_window_s > 0, warmup_s >= 0 and idle_s >= 0; "
                f"got {self}"
            )

    def to_dict(self) -> dict[str, float]:
        """The settings a report records (not the clock)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.compare}


@dataclass(frozen=True)
class _Run:
    windows: tuple[Window, ...]
    idle_power_w: float | None
    latencies_s: tuple[float, ...]
    iterations: int


#: the old name, kept importable for one release (it shadowed typing.Protocol)
Protocol = MeasurementProtocol


def _timed(step: Callable[[], object], n: int, sync: Callable[[], None], clock) -> float:
    sync()
    start = clock()
    for _ in range(n):
        step()
    sync()
    return clock() - start


def _iterations(step, sync, clock, target_s: float) -> int:
    """Double the iteration count until a run lasts >= 20 % of the target, then extrapolate."""
    n = 1
    while True:
        elapsed = _timed(step, n, sync, clock)
        if elapsed >= 0.2 * target_s or n >= 1 << 20:
            return max(1, math.ceil(target_s / max(elapsed / n, 1e-9)))
        n *= 2


def _window(meter: Meter, index: int, total: int, run: Callable[[], float]) -> tuple[float, float]:
    try:
        meter.begin()
        seconds = run()
        joules = meter.end()
    except MeterError as e:
        raise MeterError(f"window {index + 1} of {total}: {e}") from e
    except Exception as e:
        raise MeterError(
            f"meter {meter.backend} failed during window {index + 1} of {total} "
            f"({type(e).__name__}: {e}); nothing was recorded — check the device and retry"
        ) from e
    if joules <= 0:
        raise MeterError(
            f"window {index + 1} of {total} ({seconds:.3f} s) read {joules} J from "
            f"{meter.backend}: the counter did not advance; lengthen the window (>= 10x its "
            f"{meter.update_period_s} s update period) or check the meter"
        )
    return joules, seconds


def run_protocol(
    step: Callable[[], object],
    *,
    samples_per_step: int,
    meter: Meter | None,
    protocol: MeasurementProtocol = MeasurementProtocol(),
    sync: Callable[[], None] = lambda: None,
    progress: Callable[[str], None] = lambda message: None,
) -> _Run:
    """Run the protocol on ``step`` (one synchronisable forward pass). Returns raw windows."""
    clock, sleep = protocol.clock, protocol.sleep
    idle_w = None
    if meter is not None and protocol.idle_s > 0:
        progress("idle power")
        sync()
        joules, seconds = _window(meter, 0, 1, lambda: (sleep(protocol.idle_s), protocol.idle_s)[1])
        idle_w = joules / seconds
    progress("warm-up")
    start, done = clock(), 0
    while done < 3 or clock() - start < protocol.warmup_s:
        step()
        done += 1
    sync()
    period = meter.update_period_s if meter is not None else 0.0
    target = max(protocol.min_window_s, 10 * period)
    iterations = _iterations(step, sync, clock, target)
    windows = []
    for i in range(protocol.windows):
        progress(f"window {i + 1}/{protocol.windows}")
        if meter is None:
            seconds, joules = _timed(step, iterations, sync, clock), math.nan
        else:
            joules, seconds = _window(
                meter, i, protocol.windows, lambda: _timed(step, iterations, sync, clock)
            )
        windows.append(Window(joules, seconds, iterations, iterations * samples_per_step))
    progress("latency")
    n_lat = min(protocol.max_latency_iters, max(5, iterations))
    latencies = tuple(_timed(step, 1, sync, clock) for _ in range(n_lat))
    return _Run(tuple(windows), idle_w, latencies, iterations)


def _environment(device: str, meter: Meter | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = cpu_name()
    if meter is not None:
        env.update(meter.info())
    env["cuda_device_order"] = os.environ.get("CUDA_DEVICE_ORDER")
    return env


def measure(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    meter: Meter | str | None = "auto",
    protocol: MeasurementProtocol = MeasurementProtocol(),
    hardware: str = "horowitz-45nm",
    estimated: EnergyProfile | None = None,
    progress: Callable[[str], None] = lambda message: None,
    **deployment: Any,
) -> Measurement:
    """Measure joules per sample and latency of ``model(example_inputs)`` as deployed.

    Args:
        model: the model (moved to ``device``; cast to ``dtype`` when given).
        example_inputs: one batch; its first dimension is the batch size.
        meter: ``"auto"`` (Zeus for the device, falling back to no meter), a :class:`Meter`, or
            None (latency only; energy is the estimate).
        protocol: window, warm-up and idle settings.
        hardware: profile for the labelled estimate when no meter is read.
        estimated: that estimate, when the caller has it (an int8 model is priced from its
            float twin with per-layer dtypes; tracing the converted graph would not see int8).
        deployment: the fields of :class:`~energyprune.deploy.runtime.Deployment` (``device``,
            ``dtype``, ``channels_last``, ``cuda_graph``, ``compile``, ``int8_linear``): levers
            that are measured, not assumed. int8 Linear layers are priced as int8.

    Returns:
        A :class:`Measurement`.

    Raises:
        MeterError: the meter failed mid-run or read a 0 J window.
    """
    if not isinstance(example_inputs, torch.Tensor):
        raise ConfigError("measure takes one input tensor whose first dimension is the batch")
    setup = build(Deployment, **deployment)
    meter, reason = _open(meter, setup.device)
    int8_layers: list[str] = []
    if setup.int8_linear:
        int8_layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    estimate = None
    if meter is None:
        layers = dict.fromkeys(int8_layers, "int8")
        estimate = _estimate(model, example_inputs, hardware, setup.dtype, layers, estimated)
    step, sync = prepare(model, example_inputs, setup)
    result = measure_step(
        step,
        samples_per_step=example_inputs.shape[0],
        meter=meter,
        unavailable_reason=reason,
        protocol=protocol,
        sync=sync,
        deployment=replace(setup, dtype=setup.dtype or dtype_name(example_inputs.dtype)),
        progress=progress,
    )
    levers = {"channels_last": setup.channels_last, "cuda_graph": setup.cuda_graph}
    levers.update(compile=setup.compile, int8_layers=int8_layers)
    return replace(result, settings={**levers, **result.settings}, estimate=estimate)


def measure_step(
    step: Callable[[], object],
    *,
    samples_per_step: int,
    meter: Meter | str | None = "auto",
    unavailable_reason: str | None = None,
    protocol: MeasurementProtocol = MeasurementProtocol(),
    sync: Callable[[], None] = lambda: None,
    deployment: Deployment | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Measurement:
    """Measure any prepared, synchronisable step (a forward pass, an LM decode step) under the
    protocol: one code path for every model, so every figure means the same.

    ``samples_per_step`` is the unit joules are divided by (images; tokens for an LM);
    ``unavailable_reason`` says why ``meter`` is None when the caller already tried one.
    ``deployment`` names the device and dtype the step runs in (default: CPU). The result's
    ``batch_size`` is ``samples_per_step`` and it carries no estimate.
    """
    deployment = deployment or Deployment()
    meter, reason = _open(meter, deployment.device)
    with other_load() as load:
        run = run_protocol(
            step,
            samples_per_step=samples_per_step,
            meter=meter,
            protocol=protocol,
            sync=sync,
            progress=progress,
        )
    settings = {**protocol.to_dict(), "iterations_per_window": run.iterations}
    source = _Source(meter, unavailable_reason or reason, deployment, load.cores)
    return _summarise(run, source, samples_per_step, settings)


@dataclass(frozen=True)
class _Source:
    """Where a reading came from: the meter (or why none), the deployment, the other load."""

    meter: Meter | None
    reason: str | None
    deployment: Deployment
    load: float | None


def _open(meter: Meter | str | None, device: str) -> tuple[Meter | None, str | None]:
    """The meter to read (``"auto"``: Zeus for the device) and, without one, why not."""
    if meter == "auto":
        try:
            return open_meter(device), None
        except MeterUnavailableError as e:
            return None, str(e)
    if meter is None:
        return None, "meter disabled"
    return meter, None


def _estimate(model, example, hardware, dtype, layer_dtypes, estimated) -> dict[str, Any]:
    """The labelled estimate a meterless measurement reports instead of joules."""
    from energyprune.energy.pricing.estimates import profile

    prof = estimated or profile(model, example, hardware, dtype, layer_dtypes=layer_dtypes)
    joules = prof.total.energy_j / example.shape[0]
    return {"estimated": True, "hardware": prof.hardware, "joules_per_sample": joules}


def _summarise(run: _Run, source: _Source, samples_per_step: int, settings) -> Measurement:
    meter, load = source.meter, source.load
    device, dtype = source.deployment.device, source.deployment.dtype
    latencies_ms = np.array(run.latencies_s) * 1e3
    samples = sum(w.samples for w in run.windows)
    seconds = sum(w.seconds for w in run.windows)
    jps = np.array([w.joules_per_sample for w in run.windows])
    measured = meter is not None
    active = None
    if measured and run.idle_power_w is not None:
        active = float(
            np.median([(w.joules - run.idle_power_w * w.seconds) / w.samples for w in run.windows])
        )
    spread = None
    repeats = jps if measured else [w.seconds / w.samples for w in run.windows]
    noise = Noise(iqr_fraction(list(repeats)), load)
    if measured:
        quartiles = np.percentile(jps, [25, 75])
        spread = {"median": float(np.median(jps)), "iqr": float(quartiles[1] - quartiles[0])}
    return Measurement(
        measured=measured,
        backend=meter.backend if measured else "estimate",
        device=meter.device if measured else _environment(device, None)["device_name"],
        batch_size=int(samples_per_step),
        dtype=dtype or "as loaded",
        joules_per_sample=spread,
        active_joules_per_sample=active,
        latency_ms={
            "p50": float(np.percentile(latencies_ms, 50)),
            "p95": float(np.percentile(latencies_ms, 95)),
        },
        throughput_sps=samples / seconds,
        power_w=float(np.median([w.power_w for w in run.windows])) if measured else None,
        idle_power_w=run.idle_power_w,
        windows=run.windows if measured else (),
        settings=settings,
        environment=_environment(device, meter),
        unavailable_reason=source.reason,
        noise=noise.to_dict(),
    )
