"""The runtime a model is measured in: device, dtype, memory format, int8 Linear layers,
``torch.compile`` with freezing, CUDA graphs. Measurement (energy/measurement/protocol.py) runs
what this prepares, so every lever is measured, not assumed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from energyprune.deploy.quantize import quantize_int8_linear
from energyprune.errors import ConfigError
from energyprune.models.layers import TORCH_DTYPES
from energyprune.models.placement import to_model

__all__ = ["Deployment", "capture_cuda_graph", "compile_for_inference", "prepare"]


@dataclass(frozen=True)
class Deployment:
    """How a model runs where it is measured: each lever is measured, not assumed.

    Attributes:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: cast the model to this (``fp16``, ``bf16``, ...); None keeps it as it is.
        channels_last: NHWC memory format for 4-D inputs.
        cuda_graph: replay the forward pass as one CUDA graph.
        compile: ``torch.compile`` with freezing.
        int8_linear: torchao dynamic int8 for ``nn.Linear`` layers, applied after the cast.
    """

    device: str = "cpu"
    dtype: str | None = None
    channels_last: bool = False
    cuda_graph: bool = False
    compile: bool = False
    int8_linear: bool = False


class _Frozen(nn.Module):
    """Runs a compiled module under Inductor's ``freezing`` (weights folded as constants)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(module)

    def forward(self, *args: Any) -> Any:
        import torch._inductor.config as inductor

        with inductor.patch(freezing=True):
            return self.compiled(*args)


def compile_for_inference(model: nn.Module) -> nn.Module:
    """``torch.compile`` for inference with freezing: what the x86 int8 (PT2E) kernels need to
    run as int8 at all, and the usual inference setting for float models, so comparisons between
    the two are like for like. Call under ``torch.no_grad()``."""
    return _Frozen(model.eval())


def prepare(
    model: nn.Module, example: torch.Tensor, deployment: Deployment
) -> tuple[Callable[[], object], Callable[[], None]]:
    """``model(example)`` as deployed: on its device, cast, memory format, int8 Linear layers,
    compiled, or replayed as a CUDA graph. Returns the step to time and a device sync."""
    device, dtype, cuda_graph = deployment.device, deployment.dtype, deployment.cuda_graph
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    if cuda_graph and not device.startswith("cuda"):
        raise ConfigError("--cuda-graph captures CUDA kernels: it needs --device cuda")
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise ConfigError(f"measure --dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype}")
    model = model.eval().to(device)
    if dtype is not None:
        model = model.to(TORCH_DTYPES[dtype])
    x = to_model(example, model)
    if deployment.channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if deployment.int8_linear:
        model = quantize_int8_linear(copy.deepcopy(model)).module
    if deployment.compile:
        model = compile_for_inference(model)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    @torch.no_grad()
    def step() -> object:
        return model(x)

    return (capture_cuda_graph(step) if cuda_graph else step), sync


def capture_cuda_graph(step: Callable[[], object]) -> Callable[[], object]:
    """``step`` captured as one CUDA graph, after three warm-up runs on a side stream (lazy
    allocations and autotuning stay out of the graph); returns the graph's replay. The step
    must keep its tensors at fixed addresses (static inputs, a static KV cache)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        step()
    return graph.replay
