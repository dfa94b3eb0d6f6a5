"""Top-1 of the resnet56 fixture pruned to the same estimated energy by each criterion, before
any fine-tuning (issue 4), on the CIFAR-10 test split.

    python benchmarks/prune_criteria.py --data ../shared/datasets/cifar10-jpeg.tar.xz \
        --out benchmarks/results/prune_criteria.json

Energy figures are estimates under the chosen profile; accuracy is measured on all 10,000 test
images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from energyprune.files import atomic_write_text
from energyprune.models.zoo import build_model, load_weights
from energyprune.pipeline.data import batches, load_cifar10
from energyprune.pipeline.evaluate import top1
from energyprune.pruning.apply import prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return top1(model, batches(x, y, 500), 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg.tar.xz"))
    parser.add_argument(
        "--weights", default=str(SHARED / "fixtures" / "cifar10_resnet56.safetensors")
    )
    parser.add_argument("--targets", default="0.8,0.5")
    parser.add_argument("--criteria", default="energy,l2,l1,random")
    parser.add_argument("--hardware", default="horowitz-45nm")
    parser.add_argument("--out", default="benchmarks/results/prune_criteria.json")
    args = parser.parse_args(argv)
    data = load_cifar10(args.data)
    dense = build_model("resnet56").model
    load_weights(dense, args.weights)
    example = torch.randn(1, 3, 32, 32)
    rows = [
        {
            "criterion": "dense",
            "target": 1.0,
            "energy_ratio": 1.0,
            "macs": None,
            "top1": test_top1(dense, data.test_x, data.test_y),
        }
    ]
    for target in (float(t) for t in args.targets.split(",")):
        for criterion in args.criteria.split(","):
            torch.manual_seed(0)
            start = time.perf_counter()
            result = prune(dense, example, target, criterion=criterion, hardware=args.hardware)
            rows.append(
                {
                    "criterion": criterion,
                    "target": target,
                    "energy_ratio": result.energy_ratio,
                    "macs": result.after.total.macs,
                    "params": result.after.total.params,
                    "prune_s": time.perf_counter() - start,
                    "top1": test_top1(result.model, data.test_x, data.test_y),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {
        **provenance(__file__, argv),
        "hardware_profile": args.hardware,
        "energy": "estimated",
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print("| criterion | target | estimated energy / dense | MACs | top-1 (no fine-tune) |")
    print("|---|---|---|---|---|")
    for r in rows:
        macs = f"{r['macs'] / 1e6:.1f} M" if r["macs"] else "125.7 M"
        print(
            f"| {r['criterion']} | {r['target']:.2f} | {r['energy_ratio']:.3f} | {macs} | "
            f"{100 * r['top1']:.2f} % |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
