"""Noisy readings: spread over the repeats, other load on the machine, and what they drive."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from energyprune.energy.measurement.noise import (
    NOISY_IQR,
    TOO_NOISY,
    Noise,
    iqr_fraction,
    other_load,
)
from energyprune.energy.measurement.protocol import MeasurementProtocol, measure
from energyprune.pipeline.int8 import int8_verdict
from energyprune.reports.report import latency_change
from tests.energy.test_measure import FakeDevice


@given(st.floats(0.1, 100.0), st.integers(2, 30))
def test_equal_repeats_have_no_spread(value, n):
    assert iqr_fraction([value] * n) == pytest.approx(0.0, abs=1e-9)
    assert not Noise(iqr_fraction([value] * n)).noisy


def test_spread_and_load_thresholds_name_their_reason():
    assert iqr_fraction([1.0, 1.0, 2.0, 2.0]) == pytest.approx(2 / 3)
    assert Noise(NOISY_IQR).reason is None  # the threshold itself is not noisy
    assert "spread 15% of the median" in Noise(0.15).reason
    assert Noise(0.01, other_load_cores=1.7).reason == "other processes used 1.7 cores"
    assert Noise(0.01, other_load_cores=None).reason is None  # unknown load is not a verdict


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="other load is read from /proc/stat")
def test_other_processes_are_seen_as_load():
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.3)  # started
        with other_load() as load:
            time.sleep(1.5)  # this process idles; two others spin
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert load.cores is not None and load.cores > 0.5


def test_a_measurement_whose_windows_disagree_is_noisy():
    dev = FakeDevice(step_s=0.001)
    model, calls = dev.model(), [0]

    class Jittery(torch.nn.Module):  # runs of 200 passes alternate between 1 ms and 5 ms each
        def forward(self, x):
            calls[0] += 1
            dev.t += 0.004 * (calls[0] // 200 % 2)
            return model(x)

    m = measure(
        Jittery(),
        torch.randn(4, 3),
        meter=None,
        protocol=MeasurementProtocol(windows=6, clock=dev.clock, sleep=dev.sleep),
    )
    assert m.noise["spread"] > NOISY_IQR and m.noisy.startswith("spread")
    quiet = FakeDevice(step_s=0.001)
    steady = measure(
        quiet.model(),
        torch.randn(4, 3),
        meter=None,
        protocol=MeasurementProtocol(clock=quiet.clock),
    )
    assert steady.noise["spread"] < 1e-9 and "spread" not in (steady.noisy or "")  # load: real


def test_a_noisy_reading_judges_nothing():
    p50 = {"fp32": 483.0, "int8": 476.0 * 1.5}  # int8 "slower", on a busy machine
    recommended, verdict = int8_verdict(p50, None, "eager, batch 1", noisy="int8: spread 40%")
    assert recommended is None
    assert verdict.endswith(f"{TOO_NOISY} (int8: spread 40%)") and "not recommended" not in verdict
    assert int8_verdict(p50, None, "eager, batch 1")[0] is False  # the same, quiet: a verdict
    before = {"latency_ms": 476.0, "latency_noise": {"reason": None}}
    after = {"latency_ms": 483.0, "latency_noise": {"reason": "other processes used 1.9 cores"}}
    assert latency_change(before, after) == f"{TOO_NOISY} (other processes used 1.9 cores)"
    assert latency_change(before, {**after, "latency_noise": None}) == "1.01×"
