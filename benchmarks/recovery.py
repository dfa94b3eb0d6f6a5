"""Accuracy recovery after pruning: which of BN recalibration, distillation, gradual pruning and
candidate choice buy back accuracy, at the same fine-tune budget (issue 11).

Every arm gets ``--epochs E`` of fine-tuning in all (every step's epochs counted, no retries:
the guardrail is off so no arm trains longer). Validation is a fixed half of CIFAR-10 test
(``val_from="test"``); test top-1 is measured on the other half. Arms:

* ``control``: the dense fixture fine-tuned E epochs (plain cross-entropy);
* ``loop``: the pipeline as it was: 3 one-shot steps (cubic), E/3 epochs each, cross-entropy;
* ``bn``: + batch-norm recalibration after every cut;
* ``distill``: + distillation from the dense model;
* ``both``: BN recalibration + distillation;
* ``gradual``: both, one step whose budget falls inside one E-epoch run;
* ``candidates``: both, each step choosing among 4 ways to meet the budget by recalibrated
  accuracy (EagleEye);
* ``tp``: Torch-Pruning's default (global group-L2, its own pruner) bisected to the MACs of the
  ``both`` arm, fine-tuned like the control (plain cross-entropy, no recalibration);
* ``tp_recovered``: the same cut given our arms' recovery: BN recalibration after the cut, then
  the E epochs distilled from the frozen dense teacher (what ``both`` gets).

    python benchmarks/recovery.py --out benchmarks/results/recovery_resnet20.json
    python benchmarks/recovery.py --device cuda --epochs 30 --model resnet56 --target-energy 0.33

The JSON is rewritten after every arm, so a cut-off run keeps what it finished.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from energyprune.energy.pricing.estimates import profile
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.models.zoo import build_model, load_weights
from energyprune.pipeline.data import load_data
from energyprune.pipeline.evaluate import top1
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.recover import Teacher, recalibrate_bn
from energyprune.pipeline.run import Hooks, RunConfig, run
from energyprune.pruning.spec import PruneSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_resnet56 import tp_default
from provenance import provenance

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARMS = ("control", "loop", "bn", "distill", "both", "gradual", "candidates", "tp", "tp_recovered")
BASELINES = ("control", "tp", "tp_recovered")  # arms that do not run the pipeline
LOOP_STEPS = 3


def _pipeline_cfg(arm: str, args: argparse.Namespace, train: TrainConfig) -> RunConfig:
    steps = 1 if arm == "gradual" else min(LOOP_STEPS, args.epochs)
    per_step = args.epochs // steps
    base = RunConfig(
        target_energy=args.target_energy,
        steps=steps,
        schedule="cubic",
        max_acc_drop=100.0,  # no retries: every arm trains exactly E epochs
        train=replace(train, epochs=per_step),
        final_epochs=args.epochs - per_step * steps,
        spec=PruneSpec(target_energy=args.target_energy, hardware=args.hardware),
        bn_batches=0,
        distill=False,
    )
    both = replace(base, bn_batches=args.bn_batches, distill=True)
    return {
        "loop": base,
        "bn": replace(base, bn_batches=args.bn_batches),
        "distill": replace(base, distill=True),
        "both": both,
        "gradual": replace(both, schedule="gradual"),
        "candidates": replace(both, candidates=4),
    }[arm]


def _row(arm: str, model, data, dense_j: float, args, wall: float, report=None) -> dict:
    model = model.cpu()
    prof = profile(
        model, example_input(model, data.input_shape), args.hardware, name=arm, shapes_only=True
    )
    entry = {
        "arm": arm,
        "test_top1": top1(model, data.test, data.num_classes),
        "energy_fraction": prof.total.energy_j / dense_j,
        "estimated_j_per_img": prof.total.energy_j,
        "macs": prof.total.macs,
        "params": prof.total.params,
        "wall_s": wall,
    }
    if report is not None:
        entry["steps"] = report["steps"]
    print(json.dumps({k: v for k, v in entry.items() if k != "steps"}), file=sys.stderr)
    return entry


def _baseline(arm: str, dense, data, args, train: TrainConfig, rows: list[dict]):
    """The dense control or Torch-Pruning's cut, fine-tuned outside the pipeline."""
    if arm == "control":
        model = copy.deepcopy(dense)
        finetune(model, data.train, replace(train, epochs=args.epochs))
        return model
    both = next((r for r in rows if r["arm"] == "both"), None)
    if both is None:
        raise SystemExit(f"the {arm} arm prunes to the 'both' arm's MACs: run 'both' first")
    model = tp_default(copy.deepcopy(dense).cpu(), both["macs"]).to(args.device)
    if arm == "tp":  # labelled plain cross-entropy in the table
        finetune(model, data.train, replace(train, epochs=args.epochs))
        return model
    torch.manual_seed(0)
    recalibrate_bn(model, data.train, args.bn_batches)
    teacher = Teacher(dense)
    finetune(model, data.train, replace(train, epochs=args.epochs), teacher=teacher.module)
    teacher.check()
    return model


def _arm(arm: str, dense, data, args, train: TrainConfig, rows: list[dict], dense_j: float):
    start = time.perf_counter()
    if arm in BASELINES:
        model = _baseline(arm, dense, data, args, train, rows)
        return _row(arm, model, data, dense_j, args, time.perf_counter() - start)
    cfg = _pipeline_cfg(arm, args, train)
    result = run(
        copy.deepcopy(dense),
        data,
        cfg,
        Path("benchmarks/results/runs") / f"recovery_{args.model}_{arm}",
        arch=args.model,
        hooks=Hooks(log=lambda m: print(f"[{arm}] {m}", file=sys.stderr, flush=True)),
    )
    return _row(arm, result.model, data, dense_j, args, time.perf_counter() - start, result.report)


def _summary(rows: list[dict]) -> dict:
    """Points each ingredient added over today's loop, and the best pruned arm's gap."""
    by = {r["arm"]: 100 * r["test_top1"] for r in rows}
    out = {}
    for name, arm, base in (
        ("bn_recalibration_pt", "bn", "loop"),
        ("distillation_pt", "distill", "loop"),
        ("both_pt", "both", "loop"),
        ("gradual_over_both_pt", "gradual", "both"),
        ("candidates_over_both_pt", "candidates", "both"),
        ("recovery_for_tp_pt", "tp_recovered", "tp"),
        ("ours_over_tp_same_recovery_pt", "both", "tp_recovered"),
    ):
        if arm in by and base in by:
            out[name] = by[arm] - by[base]
    pruned = [r for r in rows if r["arm"] not in BASELINES]
    if pruned and "control" in by:
        best = max(pruned, key=lambda r: r["test_top1"])
        out["best_arm"] = best["arm"]
        out["best_gap_to_control_pt"] = by["control"] - 100 * best["test_top1"]
        out["best_energy_fraction"] = best["energy_fraction"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--weights", help="default: the shared fixture of --model")
    parser.add_argument("--data", default=f"cifar10:{SHARED / 'datasets' / 'cifar10-jpeg.tar.xz'}")
    parser.add_argument("--target-energy", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs of every arm")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--bn-batches", type=int, default=50)
    parser.add_argument("--max-batches", type=int, help="cap batches per epoch (smoke runs)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"subset of {','.join(ARMS)}")
    parser.add_argument("--hardware", default="horowitz-45nm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/recovery_resnet20.json")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if unknown := set(arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}; choose from {','.join(ARMS)}")
    torch.manual_seed(0)
    data = load_data(args.data, batch_size=args.batch_size, val_from="test")
    dense = build_model(args.model).model
    load_weights(dense, args.weights or SHARED / "fixtures" / f"cifar10_{args.model}.safetensors")
    example = example_input(dense, data.input_shape)
    dense_j = profile(dense, example, args.hardware, name="dense", shapes_only=True).total.energy_j
    dense = dense.to(args.device).eval()
    train = TrainConfig(epochs=args.epochs, lr=args.lr, max_batches=args.max_batches)
    report = {
        **provenance(__file__, argv, args.device),
        "model": args.model,
        "target_energy": args.target_energy,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_batches_per_epoch": args.max_batches,
        "hardware_profile": args.hardware,
        "validation": data.val_source,
        "dense_test_top1_no_finetune": top1(dense, data.test, data.num_classes),
        "rows": [],
    }
    start = time.perf_counter()
    for arm in arms:
        report["rows"].append(_arm(arm, dense, data, args, train, report["rows"], dense_j))
        report["summary"] = _summary(report["rows"])
        report["wall_s"] = time.perf_counter() - start
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    control = next((100 * r["test_top1"] for r in report["rows"] if r["arm"] == "control"), None)
    print("| arm | est. energy / dense | MACs | test top-1 | drop vs control | wall |")
    print("|---|---|---|---|---|---|")
    for r in report["rows"]:
        drop = f"{control - 100 * r['test_top1']:.2f} pt" if control is not None else "—"
        print(
            f"| {r['arm']} | {r['energy_fraction']:.3f} | {r['macs'] / 1e6:.1f} M | "
            f"{100 * r['test_top1']:.2f} % | {drop} | {r['wall_s'] / 60:.1f} min |"
        )
    print(json.dumps(report.get("summary", {}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
