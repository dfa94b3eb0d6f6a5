"""`energyprune quantize`: int8 post-training quantisation of a model or a pruned folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console

from energyprune.cli.common import load_model
from energyprune.files import atomic_write_text


def add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 post-training quantisation (CPU, PT2E) with an accuracy guardrail",
        description="Quantise a model (or a folder written by `prune --out`) to int8 with "
        "calibration batches from the validation split. When validation top-1 falls more than "
        "--max-acc-drop points, the most sensitive layers stay in floating point (mixed "
        "precision). Writes DIR/model.pt2 (torch.export program), quant.json and "
        "quant_report.json.",
    )
    p.add_argument("model", help="model spec or a pruned folder (plan.json + model.safetensors)")
    p.add_argument("--weights", help="weights for a model spec")
    p.add_argument("--input-shape", help="input shape (default from the data)")
    p.add_argument("--data", default="digits", help="digits | cifar10:PATH | ...")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--calibration-batches", type=int, default=8)
    p.add_argument("--max-acc-drop", type=float, default=0.5, help="guardrail in points")
    p.add_argument("--hardware", default="horowitz-45nm")
    p.add_argument("--batch-size", type=int, default=128)
    p.set_defaults(run=run_quantize)


def _source(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    folder = Path(args.model)
    if folder.is_dir():
        from energyprune.pruning.export import load

        model, plan = load(folder)
        return model, plan.arch["name"]
    built, _ = load_model(args)
    return built.model, built.name


def run_quantize(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pipeline.data import load_data
    from energyprune.pipeline.driver import check_compatible

    model, name = _source(args)
    data = load_data(args.data, batch_size=args.batch_size)
    check_compatible(model, data, name)
    write_int8(
        model,
        data,
        name,
        args.out,
        console,
        hardware=args.hardware,
        max_acc_drop=args.max_acc_drop,
        calibration_batches=args.calibration_batches,
    )
    return 0


def write_int8(model, data, name: str, out, console: Console, **settings) -> dict:
    """Quantise with the guardrail, save model.pt2 + quant.json + quant_report.json, print."""
    from energyprune.pipeline.int8 import int8_with_guardrail
    from energyprune.pipeline.report import int8_table
    from energyprune.pruning.quantize import save_quantized

    with console.status("quantising to int8"):
        q, report = int8_with_guardrail(model, data, name, **settings)
    save_quantized(q, out)
    atomic_write_text(Path(out) / "quant_report.json", json.dumps(report, indent=2) + "\n")
    console.print(int8_table(report))
    if not report["recommended"]:
        console.print(
            "[yellow]int8 measured slower than fp32 here (eager reference kernels): "
            "not recommended for this deployment unless compiled[/]"
        )
    console.print(f"wrote {out}/model.pt2, quant.json, quant_report.json")
    return report
