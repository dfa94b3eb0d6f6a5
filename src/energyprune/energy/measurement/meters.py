"""Energy meters: one thin adapter over Zeus, plus scripted meters for tests and replays.

The rest of the code sees a :class:`Meter` — ``begin()`` then ``end() -> joules`` — and never
imports Zeus. Zeus (the ML.ENERGY monitor) reads the NVML total-energy counter on Volta and newer
GPUs (power polling on older ones), Intel/AMD RAPL with wrap-around, AMD GPUs, Apple silicon and
Jetson; we do not re-implement any of those readers.
"""

from __future__ import annotations

import os
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from energyprune.errors import MeterError, MeterUnavailableError

__all__ = [
    "SOC_RAILS",
    "CounterMeter",
    "EnergyMeter",
    "Meter",
    "ZeusMeter",
    "cpu_name",
    "open_meter",
    "soc_joules",
    "soc_kind",
]


class Meter(ABC):
    """A source of energy windows on one device.

    Attributes:
        backend: ``"nvml"``, ``"rapl"``, ``"amdsmi"``, ``"soc"`` or a test name.
        device: human-readable device name.
        update_period_s: how often the underlying counter updates (windows must be >= 10x this).
    """

    backend: str = "unknown"
    device: str = "unknown"
    update_period_s: float = 0.1

    @abstractmethod
    def begin(self) -> None:
        """Start a window (the caller has synchronised the device)."""

    @abstractmethod
    def end(self) -> float:
        """End the window and return its energy in joules."""

    def info(self) -> dict[str, Any]:
        """Device and driver facts recorded with every measurement."""
        return {"backend": self.backend, "device": self.device}


class CounterMeter(Meter):
    """A meter over any monotonically increasing energy counter (joules).

    Used for scripted counters in tests and for replaying recorded counters; a negative delta
    (counter reset) is an error, never a result.
    """

    def __init__(
        self,
        read_joules: Callable[[], float],
        *,
        backend: str = "counter",
        device: str = "scripted counter",
        update_period_s: float = 0.001,
    ) -> None:
        self.read_joules = read_joules
        self.backend = backend
        self.device = device
        self.update_period_s = update_period_s
        self._start: float | None = None

    def begin(self) -> None:
        self._start = float(self.read_joules())

    def end(self) -> float:
        if self._start is None:
            raise MeterError("meter window ended before it began: call begin() first")
        delta = float(self.read_joules()) - self._start
        self._start = None
        if delta < 0:
            raise MeterError(f"energy counter of {self.backend} went backwards ({delta:.3f} J)")
        return delta


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Zeus's SoC measurement class → the rails (mJ fields) that make up the device's energy, in
#: order of preference, each with what it is
SOC_RAILS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "JetsonMeasurement": (
        (("total_energy_mj",), "module input rail (VDD_IN): gross board energy"),
        (("cpu_energy_mj", "gpu_energy_mj"), "CPU + GPU rails (this board has no input rail)"),
    ),
    "AppleSiliconMeasurement": (
        (
            ("cpu_total_mj", "gpu_mj", "gpu_sram_mj", "dram_mj", "ane_mj"),
            "CPU + GPU + GPU SRAM + DRAM + ANE (powermetrics)",
        ),
    ),
}


def soc_kind() -> str | None:
    """``"jetson"``, ``"apple"`` or None: the SoC whose rails Zeus can read here."""
    try:
        from zeus.device.soc.apple import apple_silicon_is_available
        from zeus.device.soc.jetson import jetson_is_available
    except ImportError:  # pragma: no cover - zeus is a dependency
        return None
    if jetson_is_available():
        return "jetson"
    return "apple" if apple_silicon_is_available() else None


def soc_joules(measurement: Any) -> tuple[float, str]:
    """(joules, which rails) of one Zeus SoC window: the first rail set the board reports."""
    name = type(measurement).__name__
    for fields, what in SOC_RAILS.get(name, ()):
        values = [getattr(measurement, f, None) for f in fields]
        if any(v is not None for v in values):
            return sum(float(v) for v in values if v is not None) / 1000.0, what
    raise MeterError(
        f"meter soc: {name} reports none of the rails we know "
        f"({', '.join(SOC_RAILS)}); upgrade energyprune or zeus"
    )


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


class ZeusMeter(Meter):
    """The only Zeus importer: NVML/AMD GPU counters for ``cuda[:i]``, RAPL package for ``cpu``,
    and the SoC rails of a Jetson (``cuda`` there) or Apple silicon (``mps``).

    RAPL domains nest (package ⊃ core): only package energy is summed, over sockets. A Jetson
    has no NVML: its module input rail (INA3221, polled by Zeus every ~0.1 s) is read instead,
    which is gross board energy, as HW-NAS-Bench measured it.
    """

    def __init__(self, device: str = "cuda") -> None:
        try:
            from zeus.monitor import ZeusMonitor
        except ImportError as e:  # pragma: no cover - zeus is a dependency
            raise MeterUnavailableError("meter unavailable: zeus is not installed") from e
        self._key = f"energyprune-{id(self)}"
        self.rail: str | None = None
        soc = soc_kind() if device.startswith("cuda") or device == "mps" else None
        if soc is not None:
            self._monitor = self._open_soc(ZeusMonitor, soc)
            self.device = "NVIDIA Jetson" if soc == "jetson" else f"Apple {platform.machine()}"
            self.backend = soc
            self.update_period_s = 0.1
        elif device == "mps":
            raise MeterUnavailableError("meter unavailable: Zeus found no Apple silicon rails")
        elif device.startswith("cuda"):
            self._monitor = self._open_gpu(ZeusMonitor, _cuda_index(device))
            self.device = torch.cuda.get_device_name(_cuda_index(device))
            self.backend = "amdsmi" if torch.version.hip else "nvml"
            self.update_period_s = 0.1  # NVML energy counter: ~20-100 ms
        elif device == "cpu":
            self._monitor = self._open_cpu(ZeusMonitor)
            self.device = cpu_name()
            self.backend = "rapl"
            self.update_period_s = 0.001
        else:
            raise MeterUnavailableError(f"meter unavailable: no energy meter for device '{device}'")

    @staticmethod
    def _open_gpu(monitor_cls, index: int):
        if not torch.cuda.is_available():
            raise MeterUnavailableError("meter unavailable: CUDA is not available")
        try:
            return monitor_cls(gpu_indices=[index], cpu_indices=[])
        except Exception as e:
            raise MeterUnavailableError(f"meter unavailable: GPU {index}: {e}") from e

    @staticmethod
    def _open_soc(monitor_cls, kind: str):
        try:
            monitor = monitor_cls(gpu_indices=[], cpu_indices=[])
        except Exception as e:
            raise MeterUnavailableError(f"meter unavailable: {kind} rails: {e}") from e
        if not getattr(monitor, "soc_is_present", False):
            raise MeterUnavailableError(
                f"meter unavailable: Zeus could not open the {kind} rails (on a Jetson, the "
                "INA3221 files under /sys/bus/i2c must be readable)"
            )
        return monitor

    @staticmethod
    def _open_cpu(monitor_cls):
        from zeus.device import get_cpus
        from zeus.device.cpu.common import ZeusCPUInitError, ZeusCPUNoPermissionError

        try:
            cpus = get_cpus()
        except ZeusCPUNoPermissionError as e:
            raise MeterUnavailableError(
                "meter unavailable: permission — RAPL energy files are root-only on current "
                "kernels; run as root or `sudo chmod -R a+r /sys/class/powercap/intel-rapl`"
            ) from e
        except ZeusCPUInitError as e:
            raise MeterUnavailableError("meter unavailable: no RAPL interface on this CPU") from e
        return monitor_cls(gpu_indices=[], cpu_indices=list(range(len(cpus))))

    def begin(self) -> None:
        try:
            self._monitor.begin_window(self._key, sync_execution=False)
        except Exception as e:
            raise MeterError(f"meter {self.backend} failed to start a window: {e}") from e

    def end(self) -> float:
        try:
            m = self._monitor.end_window(self._key, sync_execution=False)
        except Exception as e:
            raise MeterError(f"meter {self.backend} failed to end a window: {e}") from e
        if self.backend in ("jetson", "apple"):
            joules, self.rail = soc_joules(m.soc_energy)
            return joules
        energies = m.gpu_energy if self.backend != "rapl" else (m.cpu_energy or {})
        return float(sum(energies.values()))

    def info(self) -> dict[str, Any]:
        facts = super().info()
        if self.backend == "nvml":
            try:
                import pynvml

                pynvml.nvmlInit()
                facts["driver"] = pynvml.nvmlSystemGetDriverVersion()
            except Exception:  # driver facts are best effort
                facts["driver"] = None
        facts["cuda"] = torch.version.cuda
        if self.backend in ("jetson", "apple"):
            facts["rail"] = self.rail
        return facts


def open_meter(device: str) -> Meter:
    """Open the energy meter for ``device`` (``cuda``, ``cuda:1``, ``cpu``).

    Raises:
        MeterUnavailableError: no meter exists or it cannot be read (the message says why).
    """
    # NVML numbers GPUs by PCI bus id; make CUDA agree before it initialises.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return ZeusMeter(device)


def _synchronize(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(device)


class EnergyMeter:
    """Context manager: ``with EnergyMeter("cuda") as m: ...`` then ``m.joules`` and ``m.seconds``.

    The device is synchronised on entry and exit, so queued kernels are inside the window. A
    0 J window is an error (the counter did not advance), not a result.
    """

    def __init__(self, device: str = "cuda", meter: Meter | None = None) -> None:
        self.device = device
        self.meter = meter if meter is not None else open_meter(device)
        self.joules: float | None = None
        self.seconds: float | None = None
        self._t0 = 0.0

    def __enter__(self) -> EnergyMeter:
        _synchronize(self.device)
        self.meter.begin()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _synchronize(self.device)
        joules = self.meter.end()
        self.seconds = time.perf_counter() - self._t0
        if joules <= 0 and exc[0] is None:
            raise MeterError(
                f"{self.meter.backend} window of {self.seconds:.3f} s read {joules} J: the "
                "counter did not advance; make the window >= 10x its "
                f"{self.meter.update_period_s} s update period"
            )
        self.joules = joules
