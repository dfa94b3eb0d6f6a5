"""Hardware profiles: energy coefficients as data (YAML), shipped built-ins or a user's file."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from energyprune.energy.hardware.kernel_time import KernelTiming, parse_runtime
from energyprune.errors import ConfigError
from energyprune.files import read_text

__all__ = [
    "BUILTIN_PROFILES",
    "DTYPES",
    "HardwareProfile",
    "Interconnect",
    "PowerRange",
    "builtin_summaries",
    "load_hardware",
]

#: the dtypes a profile prices tensors as
DTYPES = ("fp32", "fp16", "bf16", "int8")

_PROFILE_DIR = resources.files("energyprune.energy.hardware") / "profiles"
BUILTIN_PROFILES: tuple[str, ...] = tuple(
    sorted(p.name.removesuffix(".yaml") for p in _PROFILE_DIR.iterdir() if p.name.endswith(".yaml"))
)
_REQUIRED = ("name", "sources", "compute_pj", "memory_pj_per_byte", "buffer_bytes")
_LEVELS = ("register_file", "array", "buffer", "dram")
#: Which compute-cost row prices a dtype the profile does not list.
_COMPUTE_FALLBACK = {"fp64": "fp32", "int64": "int32", "int16": "int32", "bool": "int32"}


@dataclass(frozen=True)
class PowerRange:
    """What the device draws, from its datasheet: idle, and the most it can draw (TDP, the
    module's maximum). A profile that implies more than ``max_w`` on some kernel is wrong."""

    idle_w: float
    max_w: float


@dataclass(frozen=True)
class Interconnect:
    """The link between GPUs that tensor parallelism sums hidden states over: bytes per second
    each GPU sends, energy per byte moved, and the fixed latency of one all-reduce."""

    bandwidth: float
    pj_per_byte: float
    latency_s: float = 0.0


@dataclass(frozen=True)
class HardwareProfile:
    """Energy coefficients of one target.

    Attributes:
        name: profile id.
        compute_pj: per dtype, ``{"mac": pJ per multiply-accumulate, "add": pJ per other op}``.
        memory_pj_per_byte: pJ per byte at each memory level (register_file, array, buffer, dram).
        buffer_bytes: on-chip buffer size; activation tensors up to it are served on chip.
        accesses_per_mac: operand accesses per MAC at inner levels (e.g. register_file: 2).
        zero_skipping: MACs against zero weights are skipped and zero weights are not fetched.
        channel_multiple: channel counts the hardware prefers (pruning rounds widths to it).
        launch_pj: fixed energy per executed kernel (fitted by calibration; 0 for accelerators).
        unaligned_mac_pj: extra energy per MAC of an op whose widths are not multiples of
            ``channel_multiple`` (GPU tensor-core tiles; fitted by calibration).
        calibration: fidelity report of a calibrated profile (None for hand-written ones).
        sparse_kernels: N:M patterns the runtime has kernels for (``["2:4"]``): only there
            does an N:M-sparse weight save MACs and bytes (zero-skipping aside).
        peak_flops / bandwidth / launch_s / static_w: rates for the roofline
        (energy/pricing/roofline.py):
            FLOP/s per dtype, bytes/s per memory level, seconds per kernel launch, and static
            (idle) watts charged over the ops' time. Without ``peak_flops`` and ``bandwidth``
            no time and no static energy is priced.
        forward_s: fixed seconds per forward pass, whatever it runs: the runtime's invocation
            overhead (a TensorRT enqueue and synchronise on a Jetson), charged at ``static_w``
            once per forward, in the total and in no layer (fitted by calibration; 0 = none).
        active_w: watts above idle while a kernel runs (clocks and rails up), charged over op
            time on top of ``static_w`` (fitted by calibration; 0 = none).
        interconnect: the GPU-to-GPU link (``interconnect: {bandwidth, pj_per_byte,
            latency_s}``) that tensor-parallel pricing sends all-reduces over (None: none).
        power: the device's declared power range (``power_w: {idle, max}`` in the file); a
            fitted profile may never imply more than its maximum (None: not declared).
        runtime: how the runtime runs kernels: fusion, occupancy, per-kernel efficiency and
            launch time (:mod:`energyprune.energy.hardware.kernel_time`; the default adds nothing).
        sources / assumptions: citations and modelling assumptions, from the file.
        description / summary: what the profile prices, at length and in one line.
        path: file it was loaded from.
    """

    name: str
    compute_pj: dict[str, dict[str, float]]
    memory_pj_per_byte: dict[str, float]
    buffer_bytes: int
    accesses_per_mac: dict[str, float] = field(default_factory=dict)
    zero_skipping: bool = False
    channel_multiple: int = 1
    launch_pj: float = 0.0
    unaligned_mac_pj: float = 0.0
    calibration: dict[str, Any] | None = None
    peak_flops: dict[str, float] = field(default_factory=dict)
    bandwidth: dict[str, float] = field(default_factory=dict)
    launch_s: float = 0.0
    static_w: float = 0.0
    forward_s: float = 0.0
    active_w: float = 0.0
    runtime: KernelTiming = field(default_factory=KernelTiming)
    power: PowerRange | None = None
    interconnect: Interconnect | None = None
    sparse_kernels: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    description: str = ""
    summary: str = ""
    path: str = ""

    @property
    def timed(self) -> bool:
        """Whether the profile prices op time (and so static energy)."""
        return bool(self.peak_flops and self.bandwidth)

    def compute_row(self, dtype: str) -> str:
        """Which ``compute_pj`` row prices ``dtype`` (fp64 → fp32, wide ints → int32)."""
        for row in (dtype, _COMPUTE_FALLBACK.get(dtype, "")):
            if row in self.compute_pj:
                return row
        raise ConfigError(
            f"hardware profile '{self.name}' has no compute cost for dtype {dtype}; "
            f"it prices {sorted(self.compute_pj)}: add a '{dtype}' row under compute_pj"
        )

    def compute_costs(self, dtype: str) -> dict[str, float]:
        """``{"mac", "add"}`` pJ for ``dtype``."""
        return self.compute_pj[self.compute_row(dtype)]

    def coefficients(self) -> dict[str, float]:
        """pJ per unit of each energy feature (see :mod:`energyprune.energy.pricing.features`)."""
        coef = {"launch": self.launch_pj, "mac:unaligned": self.unaligned_mac_pj}
        for dtype, row in self.compute_pj.items():
            coef[f"mac:{dtype}"], coef[f"add:{dtype}"] = row["mac"], row["add"]
        coef.update({f"bytes:{level}": c for level, c in self.memory_pj_per_byte.items()})
        return coef

    def level_cost(self, level: str) -> float:
        """pJ per byte at ``level``."""
        try:
            return self.memory_pj_per_byte[level]
        except KeyError:
            raise ConfigError(
                f"hardware profile '{self.name}' has no memory level '{level}'; it has "
                f"{sorted(self.memory_pj_per_byte)}: add it under memory_pj_per_byte"
            ) from None


def _rates(data: dict, origin: str, memory: dict) -> list[Any]:
    """The roofline rates' values, after checking what they name."""
    peak, bandwidth = data.get("peak_flops") or {}, data.get("bandwidth") or {}
    if not isinstance(peak, dict) or not isinstance(bandwidth, dict):
        raise ConfigError(f"hardware profile {origin}: peak_flops and bandwidth must be mappings")
    if bool(peak) != bool(bandwidth):
        raise ConfigError(
            f"hardware profile {origin}: give both peak_flops and bandwidth (or neither): the "
            "roofline needs both"
        )
    unknown = [level for level in bandwidth if level not in memory]
    if unknown:
        raise ConfigError(
            f"hardware profile {origin}: bandwidth names {unknown[0]}, which has no cost in "
            "memory_pj_per_byte"
        )
    rates = [*peak.values(), *bandwidth.values()]
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 for v in rates):
        raise ConfigError(f"hardware profile {origin}: peak_flops and bandwidth must be > 0")
    return [
        *rates,
        data.get("launch_s", 0.0),
        data.get("static_w", 0.0),
        data.get("forward_s", 0.0),
        data.get("active_w", 0.0),
    ]


def _check(data: Any, origin: str) -> HardwareProfile:
    if not isinstance(data, dict):
        raise ConfigError(f"hardware profile {origin} must be a YAML mapping of fields")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"hardware profile {origin} lacks {', '.join(missing)}: add them")
    if not data["sources"]:
        raise ConfigError(f"hardware profile {origin} must cite its sources under 'sources'")
    compute = data["compute_pj"]
    if not isinstance(compute, dict) or not compute:
        raise ConfigError(f"hardware profile {origin}: compute_pj must map dtypes to mac/add pJ")
    for dtype, row in compute.items():
        if not isinstance(row, dict) or set(row) != {"mac", "add"}:
            raise ConfigError(
                f"hardware profile {origin}: compute_pj.{dtype} must be {{mac: pJ, add: pJ}}"
            )
    memory = data["memory_pj_per_byte"]
    unknown = set(memory) - set(_LEVELS) if isinstance(memory, dict) else {"?"}
    if unknown or "dram" not in memory or "buffer" not in memory:
        raise ConfigError(
            f"hardware profile {origin}: memory_pj_per_byte needs 'buffer' and 'dram' and may "
            f"only name levels {list(_LEVELS)}"
        )
    accesses = data.get("accesses_per_mac") or {}
    for level in accesses:
        if level not in memory:
            raise ConfigError(
                f"hardware profile {origin}: accesses_per_mac names '{level}', which has no cost "
                "in memory_pj_per_byte"
            )
    numbers = [
        *(v for row in compute.values() for v in row.values()),
        *memory.values(),
        *accesses.values(),
        data["buffer_bytes"],
        data.get("launch_pj", 0.0),
        data.get("unaligned_mac_pj", 0.0),
        *_rates(data, origin, memory),
    ]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in numbers):
        raise ConfigError(
            f"hardware profile {origin}: every cost must be a number >= 0 (YAML reads 1e12 as "
            "text: write 1.0e+12)"
        )
    multiple = data.get("channel_multiple", 1)
    if not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"hardware profile {origin}: channel_multiple must be an integer >= 1")
    return _build(data, origin)


def _power(data: Any, origin: str) -> PowerRange | None:
    """``power_w: {idle: W, max: W}`` as a :class:`PowerRange`, checked."""
    if data is None:
        return None
    try:
        idle, top = float(data["idle"]), float(data["max"])
    except (TypeError, KeyError, ValueError):
        idle, top = -1.0, -1.0
    if not 0 <= idle < top:
        raise ConfigError(
            f"hardware profile {origin}: power_w must be {{idle: W, max: W}} with "
            f"0 <= idle < max, got {data!r}"
        )
    return PowerRange(idle, top)


def _interconnect(data: Any, origin: str) -> Interconnect | None:
    """``interconnect: {bandwidth, pj_per_byte, latency_s}`` as an :class:`Interconnect`."""
    if data is None:
        return None
    try:
        link = Interconnect(
            float(data["bandwidth"]), float(data["pj_per_byte"]), float(data.get("latency_s", 0))
        )
    except (TypeError, KeyError, ValueError):
        link = None
    if link is None or link.bandwidth <= 0 or link.pj_per_byte < 0 or link.latency_s < 0:
        raise ConfigError(
            f"hardware profile {origin}: interconnect must be {{bandwidth: B/s > 0, "
            f"pj_per_byte: >= 0, latency_s: >= 0}}, got {data!r}"
        )
    return link


def _patterns(values, origin: str) -> tuple[str, ...]:
    """``sparse_kernels`` as ``("2:4", ...)``; anything else is one line naming the field."""
    out = []
    for v in values if isinstance(values, list) else [values]:
        n, _, m = str(v).partition(":")
        if not (n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
            raise ConfigError(
                f"hardware profile {origin}: sparse_kernels lists N:M patterns "
                f'such as "2:4", got {v!r}'
            )
        out.append(f"{int(n)}:{int(m)}")
    return tuple(out)


def _build(data: dict, origin: str) -> HardwareProfile:
    """A checked profile mapping as a :class:`HardwareProfile`."""
    compute, memory = data["compute_pj"], data["memory_pj_per_byte"]
    accesses = data.get("accesses_per_mac") or {}
    return HardwareProfile(
        name=str(data["name"]),
        compute_pj={str(k): {n: float(x) for n, x in v.items()} for k, v in compute.items()},
        memory_pj_per_byte={str(k): float(v) for k, v in memory.items()},
        buffer_bytes=int(data["buffer_bytes"]),
        accesses_per_mac={str(k): float(v) for k, v in accesses.items()},
        zero_skipping=bool(data.get("zero_skipping", False)),
        channel_multiple=data.get("channel_multiple", 1),
        launch_pj=float(data.get("launch_pj", 0.0)),
        unaligned_mac_pj=float(data.get("unaligned_mac_pj", 0.0)),
        calibration=data.get("calibration"),
        peak_flops={str(k): float(v) for k, v in (data.get("peak_flops") or {}).items()},
        bandwidth={str(k): float(v) for k, v in (data.get("bandwidth") or {}).items()},
        launch_s=float(data.get("launch_s", 0.0)),
        static_w=float(data.get("static_w", 0.0)),
        forward_s=float(data.get("forward_s", 0.0)),
        active_w=float(data.get("active_w", 0.0)),
        runtime=parse_runtime(data.get("runtime"), origin),
        power=_power(data.get("power_w"), origin),
        interconnect=_interconnect(data.get("interconnect"), origin),
        sparse_kernels=_patterns(data.get("sparse_kernels") or [], origin),
        sources=tuple(str(s) for s in data["sources"]),
        assumptions=tuple(str(s) for s in data.get("assumptions") or ()),
        description=str(data.get("description", "")),
        summary=str(data.get("summary", "")),
        path=origin,
    )


def builtin_summaries() -> dict[str, str]:
    """Each built-in profile's one-line summary (``profile --help`` lists them)."""
    out = {}
    for name in BUILTIN_PROFILES:
        data = yaml.safe_load((_PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
        out[name] = str(data.get("summary", "")) if isinstance(data, dict) else ""
    return out


def load_hardware(spec: str | os.PathLike[str] | HardwareProfile) -> HardwareProfile:
    """Load a built-in profile by name (``"horowitz-45nm"``) or a user's YAML file by path."""
    if isinstance(spec, HardwareProfile):
        return spec
    text_spec = str(spec)
    if text_spec in BUILTIN_PROFILES:
        text = (_PROFILE_DIR / f"{text_spec}.yaml").read_text(encoding="utf-8")
        origin = f"{text_spec} (built-in)"
    else:
        path = Path(text_spec)
        if not path.is_file():
            close = difflib.get_close_matches(text_spec, BUILTIN_PROFILES, n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(
                f"hardware profile '{text_spec}' is neither a built-in "
                f"({', '.join(BUILTIN_PROFILES)}) nor an existing YAML file: {hint}"
                "check the name or path"
            )
        text, origin = read_text(path, "hardware profile"), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"hardware profile {origin} is not valid YAML: {e}".splitlines()[0]
        ) from e
    return _check(data, origin)
