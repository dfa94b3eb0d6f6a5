"""Zeus's SoC rails behind our begin/end window (a Jetson, Apple silicon), with a fake monitor
in place of Zeus's: a window's joules are the fake's reading, and the protocol subtracts the
idle power it reads from the board."""

from __future__ import annotations

import pytest
import torch
from zeus.device.soc.apple import AppleSiliconMeasurement
from zeus.device.soc.jetson import JetsonMeasurement

from energyprune.energy.measurement import meters
from energyprune.energy.measurement.protocol import MeasurementProtocol, measure
from energyprune.errors import MeterUnavailableError
from tests.energy.test_measure import FakeDevice


def _fake_monitor(dev: FakeDevice, reading, present: bool = True):
    """A ZeusMonitor stand-in whose SoC counter is ``dev``'s joules, in Zeus's mJ fields."""

    class Window:
        def __init__(self, soc_energy):
            self.soc_energy, self.gpu_energy, self.cpu_energy = soc_energy, {}, None

    class FakeMonitor:
        soc_is_present = present

        def __init__(self, gpu_indices=None, cpu_indices=None):
            assert gpu_indices == [] and cpu_indices == []  # the rails only, never NVML
            self.start: dict[str, float] = {}

        def begin_window(self, key, sync_execution=True):
            self.start[key] = dev.counter()

        def end_window(self, key, sync_execution=True):
            return Window(reading(1000.0 * (dev.counter() - self.start.pop(key))))

    return FakeMonitor


@pytest.fixture
def jetson(monkeypatch):
    dev = FakeDevice(idle_w=5.0, busy_w=12.0, step_s=0.002)
    monitor = _fake_monitor(dev, lambda mj: JetsonMeasurement(total_energy_mj=mj))
    monkeypatch.setattr(meters, "soc_kind", lambda: "jetson")
    monkeypatch.setattr("zeus.monitor.ZeusMonitor", monitor)
    return dev


def test_a_jetson_window_reads_the_input_rail(jetson):
    meter = meters.ZeusMeter("cuda")
    assert meter.backend == "jetson" and meter.update_period_s == pytest.approx(0.1)
    meter.begin()
    jetson.sleep(2.0)
    assert meter.end() == pytest.approx(5.0 * 2.0)  # the fake's reading, mJ → J
    assert "VDD_IN" in meter.info()["rail"]


def test_measure_on_a_jetson_subtracts_idle_power_read_from_the_board(jetson):
    protocol = MeasurementProtocol(clock=jetson.clock, sleep=jetson.sleep)
    m = measure(
        jetson.model(), torch.randn(4, 3), meter=meters.ZeusMeter("cuda"), protocol=protocol
    )
    assert m.measured and m.backend == "jetson"
    assert m.idle_power_w == pytest.approx(5.0)
    assert m.joules_per_sample["median"] == pytest.approx(12.0 * 0.002 / 4)  # gross
    assert m.active_joules_per_sample == pytest.approx(7.0 * 0.002 / 4)  # idle subtracted
    assert "VDD_IN" in m.environment["rail"]


def test_rails_by_board():
    joules, what = meters.soc_joules(JetsonMeasurement(cpu_energy_mj=300.0, gpu_energy_mj=700.0))
    assert joules == pytest.approx(1.0) and "no input rail" in what
    apple = AppleSiliconMeasurement(cpu_total_mj=1000, gpu_mj=500, dram_mj=250, ane_mj=250)
    assert meters.soc_joules(apple)[0] == pytest.approx(2.0)


def test_a_soc_zeus_cannot_open_is_unavailable_not_a_crash(monkeypatch):
    dev = FakeDevice()
    monitor = _fake_monitor(dev, lambda mj: JetsonMeasurement(total_energy_mj=mj), present=False)
    monkeypatch.setattr(meters, "soc_kind", lambda: "jetson")
    monkeypatch.setattr("zeus.monitor.ZeusMonitor", monitor)
    with pytest.raises(MeterUnavailableError, match="could not open the jetson rails"):
        meters.ZeusMeter("cuda")
    monkeypatch.setattr(meters, "soc_kind", lambda: None)
    with pytest.raises(MeterUnavailableError, match="no Apple silicon"):
        meters.ZeusMeter("mps")
