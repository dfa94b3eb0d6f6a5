"""ResNet-56 on CIFAR-10: energyprune vs Torch-Pruning's default vs the dense model, all
fine-tuned for the same number of epochs (issue 5).

Rows: the dense fixture fine-tuned E epochs; energyprune (``energy`` criterion, widths rounded
to 8) at 1/2 and 1/3 of the dense estimated energy, E epochs of fine-tuning; Torch-Pruning's
default recipe (global group-L2 pruning) to the same MAC count as energyprune's 1/2 row, E
epochs. Reports test top-1, estimated J/img (profile) and measured J/img where a meter exists.

    python benchmarks/cifar10_resnet56.py --epochs 1 --out benchmarks/results/cifar10_resnet56.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch_pruning as tp

from energyprune.energy.measurement.protocol import Protocol, measure
from energyprune.energy.pricing.estimates import profile
from energyprune.files import atomic_write_text
from energyprune.models.zoo import build_model, load_weights
from energyprune.pipeline.data import load_data
from energyprune.pipeline.evaluate import top1
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.run import Hooks, RunConfig, run
from energyprune.pruning.spec import PruneSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tp_default(model: torch.nn.Module, macs_target: int) -> torch.nn.Module:
    """Torch-Pruning's default global L2 pruning, ratio bisected to reach ``macs_target``."""
    example = torch.randn(1, 3, 32, 32)
    lo, hi, best = 0.0, 0.9, None
    for _ in range(12):
        ratio = (lo + hi) / 2
        candidate = copy.deepcopy(model)
        pruner = tp.pruner.MetaPruner(
            candidate,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            global_pruning=True,
            ignored_layers=[candidate.fc],
        )
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(candidate, example)
        if macs <= macs_target:
            hi, best = ratio, candidate
        else:
            lo = ratio
    return best


def row(name: str, model, data, hardware: str, device: str) -> dict:
    example = torch.randn(1, 3, 32, 32)
    prof = profile(model, example, hardware, name=name, shapes_only=True)
    entry = {
        "row": name,
        "top1": top1(model, data.test, 10),
        "macs": prof.total.macs,
        "params": prof.total.params,
        "estimated_j_per_img": prof.total.energy_j,
        "measured_j_per_img": None,
    }
    m = measure(
        model,
        torch.randn(1024 if device.startswith("cuda") else 64, 3, 32, 32),
        device=device,
        dtype="fp16" if device.startswith("cuda") else None,
        channels_last=True,
        protocol=Protocol(min_window_s=2.0),
    )
    if m.measured:
        entry["measured_j_per_img"] = m.joules_per_sample["median"]
        entry["meter"] = m.backend
    entry["latency_ms_p50"] = m.latency_ms["p50"]
    print(json.dumps(entry), file=sys.stderr, flush=True)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=f"cifar10:{SHARED / 'datasets' / 'cifar10-jpeg.tar.xz'}")
    parser.add_argument(
        "--weights", default=str(SHARED / "fixtures" / "cifar10_resnet56.safetensors")
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--max-batches", type=int, help="cap batches per epoch (CPU budgets)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hardware", default="horowitz-45nm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/cifar10_resnet56.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = load_data(args.data, batch_size=args.batch_size)
    dense = build_model("resnet56").model
    load_weights(dense, args.weights)
    train = TrainConfig(
        epochs=args.epochs, lr=args.lr, optimizer="sgd", max_batches=args.max_batches
    )
    rows, start = [], time.perf_counter()

    control = copy.deepcopy(dense).to(args.device)
    finetune(control, data.train, train)
    rows.append(
        row(f"dense, fine-tuned {args.epochs} ep", control, data, args.hardware, args.device)
    )
    ours = {}
    for label, fraction in (("1/2", 0.5), ("1/3", 1 / 3)):
        cfg = RunConfig(
            target_energy=fraction,
            steps=1,
            train=train,
            final_epochs=0,
            max_acc_drop=100.0,
            spec=PruneSpec(criterion="energy", round_to=8, hardware=args.hardware),
        )
        result = run(
            copy.deepcopy(dense).to(args.device),
            data,
            cfg,
            Path("benchmarks/results/runs") / f"resnet56_{fraction:.3f}",
            arch="resnet56",
            hooks=Hooks(log=lambda m: print(m, file=sys.stderr)),
        )
        ours[label] = result.model
        rows.append(
            row(
                f"energyprune energy, round_to 8, {label} energy",
                result.model,
                data,
                args.hardware,
                args.device,
            )
        )
    macs_target = rows[1]["macs"]
    baseline = tp_default(dense, macs_target).to(args.device)
    finetune(baseline, data.train, train)
    rows.append(
        row(
            "Torch-Pruning default (global L2) to the same MACs",
            baseline,
            data,
            args.hardware,
            args.device,
        )
    )
    report = {
        **provenance(__file__, argv, args.device),
        "epochs": args.epochs,
        "max_batches_per_epoch": args.max_batches,
        "batch_size": args.batch_size,
        "hardware_profile": args.hardware,
        "wall_s": time.perf_counter() - start,
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print("| row | top-1 | MACs | estimated J/img | measured J/img |")
    print("|---|---|---|---|---|")
    for r in rows:
        measured = f"{1e3 * r['measured_j_per_img']:.3f} mJ" if r["measured_j_per_img"] else "—"
        print(
            f"| {r['row']} | {100 * r['top1']:.2f} % | {r['macs'] / 1e6:.1f} M | "
            f"{1e3 * r['estimated_j_per_img']:.3f} mJ | {measured} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
