"""Measured energy per token of a language model, run as a server runs it.

A decode step costs what it costs at its context: one step of ``batch`` new tokens reads every
weight once and ``context`` cached tokens per sequence. So the measured step is exactly that,
repeated: a static KV cache of ``context + 1`` slots, filled by a real prefill, and each step
writes one token per sequence into the last slot and rewinds (models/hf.py, ``served_step``).
Every step in every window is the same steady-state decode at ``context``. A prefill is
measured the same way (``batch`` prompts written into an empty static cache, then rewound).

The steps run through the protocol every model runs through (protocol.py, ``measure_step``);
the sample is a token, so joules per token = window joules / (tokens per step x steps): output
tokens (``batch`` per step) for decode, prompt tokens (``batch x prompt``) for prefill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from energyprune.deploy.runtime import Deployment, capture_cuda_graph
from energyprune.energy.measurement.meters import Meter
from energyprune.energy.measurement.protocol import MeasurementProtocol, measure_step
from energyprune.energy.measurement.results import Measurement
from energyprune.energy.tracing.tensors import dtype_name
from energyprune.errors import ConfigError, first_line
from energyprune.models.hf import served_step
from energyprune.models.layers import TORCH_DTYPES
from energyprune.models.placement import placement

__all__ = ["LM_PHASES", "LMMeasurement", "LMSetting", "measure_lm"]

#: the phases of serving a step can be measured in, and what one token of each is
LM_PHASES = {"decode": "generated token", "prefill": "prompt token"}


@dataclass(frozen=True)
class LMSetting:
    """What is measured: a phase of serving and where it runs.

    Attributes:
        phase: ``decode`` (J per generated token) or ``prefill`` (J per prompt token).
        batch: sequences served together.
        length: cached tokens per sequence (decode's context) or prompt tokens (prefill).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: cast the model to ``fp32``/``fp16``/``bf16``; None keeps it as loaded.
        cuda_graph: capture the step as one CUDA graph and replay it (CUDA only).
        seed: the random token ids the prompt and the new tokens are drawn from.
    """

    phase: str = "decode"
    batch: int = 1
    length: int = 1024
    device: str = "cpu"
    dtype: str | None = None
    cuda_graph: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.phase not in LM_PHASES:
            raise ConfigError(
                f"unknown phase {self.phase!r}: measure runs --phase decode (J per generated token "
                "at --context L) or --phase prefill (J per prompt token of --prompt P)"
            )
        for name, value in (("batch", self.batch), (self.length_name, self.length)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{name} must be a whole number >= 1, got {value!r}")
        if self.dtype is not None and self.dtype not in TORCH_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(TORCH_DTYPES)}, got {self.dtype}")
        cuda = self.device.startswith("cuda")
        if self.cuda_graph and not cuda:
            raise ConfigError(
                f"--cuda-graph captures CUDA kernels and --device is {self.device}: drop "
                "--cuda-graph, or measure on a GPU with --device cuda"
            )
        if cuda and not torch.cuda.is_available():
            raise ConfigError(
                f"--device {self.device}: CUDA is not available here; use --device cpu"
            )

    @property
    def length_name(self) -> str:
        """``context`` (decode) or ``prompt`` (prefill): what ``length`` counts."""
        return "context" if self.phase == "decode" else "prompt"

    @property
    def basis(self) -> str:
        """The token joules are divided by: ``generated token`` or ``prompt token``."""
        return LM_PHASES[self.phase]

    @property
    def tokens_per_step(self) -> int:
        """Tokens one measured step produces (decode) or consumes (prefill)."""
        return self.batch * (1 if self.phase == "decode" else self.length)


@dataclass(frozen=True)
class LMMeasurement:
    """One measured phase: the setting and the protocol's result, whose samples are tokens."""

    setting: LMSetting
    result: Measurement

    @property
    def joules_per_token(self) -> float | None:
        """Gross joules per token (median over windows); None when no meter was read."""
        spread = self.result.joules_per_sample
        return None if spread is None else spread["median"]

    @property
    def tokens_per_s(self) -> float:
        return self.result.throughput_sps

    def to_dict(self) -> dict[str, Any]:
        """The row a report or ``calibrate --from`` reads (its per-token columns)."""
        s, r = self.setting, self.result
        measured = r.measured and r.joules_per_sample is not None
        return {
            "phase": s.phase,
            "batch": s.batch,
            s.length_name: s.length,
            "dtype": r.dtype,
            "device": s.device,
            "device_name": r.device,
            "gpus": 1,
            "cuda_graph": s.cuda_graph,
            "basis": s.basis,
            "tokens_per_step": s.tokens_per_step,
            "tokens_per_s": self.tokens_per_s,
            "step_latency_ms": r.latency_ms,
            # a decode step is the time between two tokens: the per-token table's itl_ms
            "itl_ms": r.latency_ms.get("p50") if s.phase == "decode" else None,
            "measured": measured,
            "joules_per_token": self.joules_per_token,
            "joules_per_token_spread": r.joules_per_sample,
            "active_joules_per_token": r.active_joules_per_sample,
            "power_w": r.power_w,
            "idle_power_w": r.idle_power_w,
            "meter": {"backend": r.backend, "device": r.device} if measured else None,
            "windows": [_window(w) for w in r.windows],
            "unavailable_reason": r.unavailable_reason,
            "noise": r.noise,
            "settings": r.settings,
            "environment": r.environment,
        }


def _window(w: Any) -> dict[str, Any]:
    row = asdict(w)
    row["tokens"] = row.pop("samples")
    return {**row, "joules_per_token": w.joules_per_sample, "power_w": w.power_w}


def measure_lm(
    model: nn.Module,
    setting: LMSetting,
    *,
    meter: Meter | str | None = "auto",
    protocol: MeasurementProtocol = MeasurementProtocol(),
    progress: Callable[[str], None] = lambda message: None,
) -> LMMeasurement:
    """Measure a causal LM's joules per token and tokens/s in one phase of serving.

    Args:
        model: a Hugging Face causal LM with weights; moved to ``setting.device`` and cast to
            ``setting.dtype`` in place.
        setting: phase, batch, context or prompt, device, dtype, CUDA graph.
        meter: ``"auto"`` (Zeus for the device, else none), a :class:`Meter`, or None.
        protocol: window, warm-up and idle settings.

    Without a meter the result says ``measured: false`` and holds no joules: an estimate
    (``profile_lm``) is the caller's to add, labelled as one.
    """
    model = model.eval().to(setting.device)
    if setting.dtype is not None:
        model = model.to(TORCH_DTYPES[setting.dtype])
    progress("filling the cache" if setting.phase == "decode" else "allocating the cache")
    served = served_step(model, setting.phase, setting.batch, setting.length, seed=setting.seed)
    step: Callable[[], object] = served.run
    if setting.cuda_graph:
        progress("capturing a CUDA graph")
        step = _captured(served.run)
    device = setting.device

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    dtype = dtype_name(placement(model).dtype)
    result = measure_step(
        step,
        samples_per_step=served.step.tokens,
        meter=meter,
        protocol=protocol,
        sync=sync,
        deployment=Deployment(device, dtype, cuda_graph=setting.cuda_graph),
        progress=progress,
    )
    return LMMeasurement(setting, result)


def _captured(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` replayed from a CUDA graph; a model whose step cannot be captured (a host
    sync inside it) is a one-line error, not a traceback."""
    try:
        return capture_cuda_graph(run)
    except RuntimeError as e:
        raise ConfigError(
            f"--cuda-graph: this model's step cannot be captured ({first_line(e)}); "
            "measure it without --cuda-graph"
        ) from None
