"""Measured energy of dense vs Torch-Pruning variants (issue 3's GPU suite).

Measures J/sample (NVML counter through energyprune's meter adapter) of the dense model and of
Torch-Pruning's uniform channel pruning at 30 % and 50 %, with and without width rounding to 8,
for the resnet56 fixture, torchvision resnet50 and vit_b_16 at two batch sizes each; the suite
runs ``--repeat`` times and reports how far the medians of repeats differ (target: within 5 %).

    python benchmarks/measure_suite.py --device cuda --out benchmarks/results/measure_suite.json

Without a meter the figures are labelled estimates (``measured: false``); latency is measured.
Ratios are compared within one run only; results go to docs/benchmarks.md with command, device
and date.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch_pruning as tp
import torchvision
from torch import nn

from energyprune.energy.measurement.protocol import Protocol, measure
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.models.zoo import build_model, load_weights

FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cifar10_resnet56.safetensors"
)
PRUNINGS = {
    "dense": None,
    "tp30": (0.3, None),
    "tp30_r8": (0.3, 8),
    "tp50": (0.5, None),
    "tp50_r8": (0.5, 8),
}


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    built = build_model(name)
    if name == "resnet56" and FIXTURE.is_file():
        load_weights(built.model, FIXTURE)
    return built.model.eval(), built.input_shape


def prune(
    model: nn.Module, shape: tuple[int, ...], ratio: float, round_to: int | None
) -> nn.Module:
    """Torch-Pruning's uniform channel pruning with group L2 magnitude (its default recipe)."""
    example = example_input(model, shape)
    ignored = [
        m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features in (10, 1000)
    ]
    kwargs: dict = {}
    if isinstance(model, torchvision.models.VisionTransformer):
        kwargs["num_heads"] = {
            block.self_attention: block.self_attention.num_heads for block in model.encoder.layers
        }
        kwargs["unwrapped_parameters"] = [(model.class_token, 2), (model.encoder.pos_embedding, 2)]
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=ignored,
        round_to=round_to,
        **kwargs,
    )
    pruner.step()
    if isinstance(model, torchvision.models.VisionTransformer):
        model.hidden_dim = model.conv_proj.out_channels
        for block in model.encoder.layers:
            attn = block.self_attention
            attn.embed_dim = attn.out_proj.in_features
            attn.head_dim = attn.embed_dim // attn.num_heads
            attn.kdim = attn.vdim = attn.embed_dim
    return model


def run_suite(models: dict[str, list[int]], device: str, protocol: Protocol) -> list[dict]:
    rows = []
    for name, batches in models.items():
        for variant, spec in PRUNINGS.items():
            model, shape = build(name)
            if spec is not None:
                model = prune(model, shape, *spec)
            for bs in batches:
                x = torch.randn(bs, *shape[1:])
                dtype = "fp16" if device.startswith("cuda") else None
                m = measure(
                    model, x, device=device, dtype=dtype, channels_last=True, protocol=protocol
                )
                macs = sum(r.macs for r in _trace(model, shape)) if bs == batches[0] else None
                rows.append(
                    {
                        "model": name,
                        "variant": variant,
                        "batch_size": bs,
                        "measured": m.measured,
                        "backend": m.backend,
                        "device": m.device,
                        "dtype": m.dtype,
                        "j_per_sample": m.joules_per_sample["median"]
                        if m.measured
                        else m.estimate["joules_per_sample"],
                        "iqr": m.joules_per_sample["iqr"] if m.measured else None,
                        "latency_ms_p50": m.latency_ms["p50"],
                        "macs": macs,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
            model.cpu()
    return rows


def _trace(model: nn.Module, shape: tuple[int, ...]):
    from energyprune.energy.tracing.tracer import trace

    with torch.no_grad():
        model = model.float().cpu()
        return trace(model, example_input(model, shape)).records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/measure_suite.json")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="resnet56 only (smoke test)")
    args = parser.parse_args(argv)
    models = {"resnet56": [1, 1024], "resnet50": [1, 64], "vit_b_16": [1, 64]}
    if args.quick:
        models = {"resnet56": [1, 8]}
    protocol = Protocol(min_window_s=args.seconds, windows=5, warmup_s=1.0, idle_s=2.0)
    runs = [run_suite(models, args.device, protocol) for _ in range(args.repeat)]
    spread = [
        abs(a["j_per_sample"] - b["j_per_sample"]) / min(a["j_per_sample"], b["j_per_sample"])
        for a, b in zip(runs[0], runs[-1], strict=True)
    ]
    result = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "max_repeat_difference": max(spread),
        "runs": runs,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}; largest difference between repeats {100 * max(spread):.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
