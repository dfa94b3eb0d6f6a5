"""Measured J/img of dense fp16, pruned fp16 and pruned int8 (issue 7's GPU item).

ResNet-56 fixture at batch 1024 on a CUDA device: the dense model, the model pruned to
``--target`` of its estimated energy (one-shot energyprune prune, or a folder from
``energyprune prune --out`` via ``--pruned``), and the pruned model with torchao's GPU int8
(dynamic int8 × int8 weights; torchao quantises Linear layers only, so the share of MACs it
covers is recorded). Each variant is measured with the project's protocol (NVML through Zeus),
fp16, channels-last, optionally CUDA graphs. int8 is recommended only when it measures neither
slower nor costlier than pruned fp16 — the same rule as the CLI.

    python benchmarks/int8_gpu.py --out benchmarks/results/int8_gpu_h100.json

Ratios are compared within one run; results go to docs/benchmarks.md with command, device, date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from energyprune.energy.measurement.protocol import Protocol, measure
from energyprune.files import atomic_write_text
from energyprune.models.zoo import build_model, load_weights
from energyprune.pipeline.int8 import int8_mac_share, int8_verdict
from energyprune.pruning.apply import prune
from energyprune.pruning.export import load

FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cifar10_resnet56.safetensors"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--target", type=float, default=0.5, help="pruning target (estimated energy)")
    p.add_argument("--pruned", help="a pruned resnet56 folder instead of a one-shot prune")
    p.add_argument("--weights", default=str(FIXTURE))
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/int8_gpu.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("int8_gpu: needs a CUDA device (this measures GPU energy)", file=sys.stderr)
        return 2
    dense = build_model("resnet56").model.eval()
    load_weights(dense, args.weights)
    x1 = torch.randn(1, 3, 32, 32)
    if args.pruned:
        pruned, _ = load(args.pruned)
    else:
        pruned = prune(dense, x1, args.target, round_to=8).model
    protocol = Protocol(min_window_s=args.seconds, windows=args.windows)
    x = torch.randn(args.batch_size, 3, 32, 32)
    settings = {"device": args.device, "dtype": "fp16", "channels_last": True,
                "cuda_graph": args.cuda_graph, "protocol": protocol}  # fmt: skip
    runs = {
        "dense_fp16": measure(dense, x, **settings),
        "pruned_fp16": measure(pruned, x, **settings),
        "pruned_int8": measure(pruned, x, int8_linear=True, **settings),
    }
    share = int8_mac_share(pruned.cpu(), x1, runs["pruned_int8"].settings["int8_layers"])
    pair = {"fp16": runs["pruned_fp16"], "int8": runs["pruned_int8"]}
    p50 = {k: m.latency_ms["p50"] for k, m in pair.items()}
    joules = None
    if all(m.measured for m in pair.values()):
        joules = {k: m.joules_per_sample["median"] for k, m in pair.items()}
    ok, verdict = int8_verdict(p50, joules, f"batch {args.batch_size}", baseline="fp16")
    result = {
        "runs": {k: m.to_dict() for k, m in runs.items()},
        "int8_share_of_macs": share,
        "int8_recommended": ok,
        "verdict": verdict,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    for name, m in runs.items():
        energy = f"{m.joules_per_sample['median']:.4g} J/img" if m.measured else "not measured"
        print(f"{name:12s} {energy:>16s} p50 {m.latency_ms['p50']:.2f} ms")
    print(f"int8 covers {share:.2%} of the MACs; {result['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
