"""Measurement protocol on CPU with scripted meters and a fake clock (deterministic)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from energyprune.energy.measurement.meters import CounterMeter, EnergyMeter
from energyprune.energy.measurement.protocol import MeasurementProtocol, measure
from energyprune.errors import ConfigError, MeterError


class FakeDevice:
    """A clock, a sleep and an energy counter: idle watts always, extra watts while busy."""

    def __init__(self, idle_w: float = 50.0, busy_w: float = 150.0, step_s: float = 0.001):
        self.t = self.busy = 0.0
        self.idle_w, self.busy_w, self.step_s = idle_w, busy_w, step_s

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def counter(self) -> float:
        return self.idle_w * self.t + (self.busy_w - self.idle_w) * self.busy

    def model(self) -> nn.Module:
        device = self

        class Busy(nn.Module):
            def forward(self, x):
                device.t += device.step_s
                device.busy += device.step_s
                return x * 2

        return Busy()


def run(dev: FakeDevice, meter, protocol: MeasurementProtocol | None = None, batch: int = 4):
    return measure(
        dev.model(),
        torch.randn(batch, 3),
        meter=meter,
        protocol=replace(protocol or MeasurementProtocol(), clock=dev.clock, sleep=dev.sleep),
    )


def test_window_deltas_idle_subtraction_and_latency():
    dev = FakeDevice()
    m = run(dev, CounterMeter(dev.counter, update_period_s=0.01))
    assert m.measured and m.backend == "counter" and len(m.windows) == 5
    assert m.idle_power_w == pytest.approx(50.0)
    assert m.joules_per_sample["median"] == pytest.approx(150.0 * 0.001 / 4)
    assert m.joules_per_sample["iqr"] == pytest.approx(0.0, abs=1e-9)
    assert m.active_joules_per_sample == pytest.approx(100.0 * 0.001 / 4)
    assert m.power_w == pytest.approx(150.0)
    assert m.latency_ms["p50"] == pytest.approx(1.0) and m.throughput_sps == pytest.approx(4000)
    assert all(w.seconds >= 1.0 - 1e-9 for w in m.windows)
    data = m.to_dict()
    assert {
        "measured",
        "backend",
        "device",
        "batch_size",
        "dtype",
        "joules_per_sample",
        "active_joules_per_sample",
        "latency_ms",
        "throughput_sps",
        "power_w",
        "idle_power_w",
        "windows",
    } <= set(data)


@pytest.mark.parametrize(
    ("step_s", "min_window_s", "update_period_s", "expected"),
    [
        (0.003, 1.0, 0.01, math.ceil(1.0 / 0.003)),
        (0.003, 1.0, 0.5, math.ceil(5.0 / 0.003)),
        (0.5, 1.0, 0.01, 2),
    ],
)
def test_iterations_fill_the_window(step_s, min_window_s, update_period_s, expected):
    dev = FakeDevice(step_s=step_s)
    meter = CounterMeter(dev.counter, update_period_s=update_period_s)
    m = run(dev, meter, MeasurementProtocol(min_window_s=min_window_s, windows=5, idle_s=0.1))
    assert abs(m.settings["iterations_per_window"] - expected) <= 1
    assert all(w.seconds >= max(min_window_s, 10 * update_period_s) - 1e-6 for w in m.windows)


def test_zero_joule_window_is_an_error():
    dev = FakeDevice()
    with pytest.raises(MeterError, match="did not advance"):
        run(dev, CounterMeter(lambda: 42.0))


def test_meter_failing_mid_run_names_the_window():
    dev = FakeDevice()
    calls = {"n": 0}

    def flaky() -> float:
        calls["n"] += 1
        if calls["n"] > 5:  # idle window (2 reads) + 1.5 energy windows
            raise OSError("NVML_ERROR_GPU_IS_LOST")
        return dev.counter()

    with pytest.raises(MeterError, match=r"window 2 of 5 .*GPU_IS_LOST"):
        run(dev, CounterMeter(flaky))


def test_no_meter_gives_labelled_estimate_and_real_latency():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    x = torch.randn(2, 3, 16, 16)
    model(x)
    m = measure(
        model,
        x,
        meter=None,
        protocol=MeasurementProtocol(min_window_s=0.02, windows=2, warmup_s=0.01, idle_s=0),
    )
    assert not m.measured and m.backend == "estimate" and m.joules_per_sample is None
    assert m.estimate["estimated"] is True and m.estimate["joules_per_sample"] > 0
    assert m.latency_ms["p50"] > 0 and m.throughput_sps > 0 and m.windows == ()


def test_int8_linear_path_is_measured_and_priced_as_int8():
    """torchao's GPU int8 path (Linear layers) runs on CPU too: the model is quantised after
    the cast, the caller's model is left alone, and the estimate prices those layers as int8."""
    pytest.importorskip("torchao")
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = torch.randn(8, 64)
    protocol = MeasurementProtocol(min_window_s=0.02, windows=2, warmup_s=0.01, idle_s=0)
    fp32 = measure(model, x, meter=None, protocol=protocol)
    int8 = measure(model, x, meter=None, protocol=protocol, int8_linear=True)
    assert int8.settings["int8_layers"] == ["0", "2"]
    assert int8.estimate["joules_per_sample"] < 0.5 * fp32.estimate["joules_per_sample"]
    assert type(model[0].weight) is nn.Parameter  # the caller's model is not quantised


def test_auto_meter_says_why_when_unavailable():
    m = measure(
        nn.Linear(4, 4),
        torch.randn(2, 4),
        meter="auto",
        protocol=MeasurementProtocol(min_window_s=0.02, windows=1, warmup_s=0, idle_s=0.05),
    )
    assert m.measured or m.unavailable_reason.startswith("meter unavailable")


def test_energy_meter_context_manager():
    dev = FakeDevice()
    with EnergyMeter("cpu", meter=CounterMeter(dev.counter)) as m:
        dev.sleep(2.0)
    assert m.joules == pytest.approx(100.0)
    with (
        pytest.raises(MeterError, match="did not advance"),
        EnergyMeter("cpu", meter=CounterMeter(lambda: 1.0)),
    ):
        pass


def test_bad_settings():
    with pytest.raises(ConfigError, match="cuda-graph"):
        measure(nn.Linear(2, 2), torch.randn(1, 2), meter=None, cuda_graph=True)
    with pytest.raises(ConfigError, match="windows"):
        MeasurementProtocol(windows=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and its NVML counter")
def test_real_gpu_window():
    x = torch.randn(4096, 4096, device="cuda")
    with EnergyMeter("cuda") as m:
        for _ in range(200):
            x @ x
    assert m.joules > 0
