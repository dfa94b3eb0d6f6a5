"""`energyprune quantize`: int8 post-training quantisation of a model or a pruned folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from energyprune.cli.common import load_model
from energyprune.errors import ConfigError
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
    from energyprune.energy.model import profile
    from energyprune.pipeline.data import load_data
    from energyprune.pipeline.driver import check_compatible
    from energyprune.pipeline.evaluate import classification_metrics, median_latency_ms, predict
    from energyprune.pruning.quantize import quantize_int8, save_quantized

    model, name = _source(args)
    data = load_data(args.data, batch_size=args.batch_size)
    check_compatible(model, data, name)
    model.eval()

    def top1(m, loader) -> float:
        pred, true = predict(m, loader)
        return classification_metrics(pred, true, data.num_classes)["top1"]

    example = torch.randn(4, *data.input_shape[1:])
    float_val = top1(model, data.val)
    skip: list[str] = []
    with console.status("quantising"):
        q = quantize_int8(model, example, data.val, max_batches=args.calibration_batches)
        int8_val = top1(q.module, data.val)
        while 100 * (float_val - int8_val) > args.max_acc_drop and len(skip) < len(q.int8_layers):
            worst = _most_sensitive(model, example, data, q.int8_layers, skip, top1, args)
            skip.append(worst)
            q = quantize_int8(
                model, example, data.val, skip=skip, max_batches=args.calibration_batches
            )
            int8_val = top1(q.module, data.val)
    if 100 * (float_val - int8_val) > args.max_acc_drop:
        raise ConfigError(
            f"int8 loses {100 * (float_val - int8_val):.2f} pt of validation top-1 even with "
            f"{len(skip)} layers in float (guardrail {args.max_acc_drop} pt): keep fp32"
        )
    x1 = torch.randn(*data.input_shape)
    fp32 = profile(model, x1, args.hardware, name=name)
    int8 = profile(model, x1, args.hardware, name=name, layer_dtypes=q.layer_dtypes)
    report = {
        "model": name,
        "float_layers": skip,
        "int8_layers": q.int8_layers,
        "val_top1": {"fp32": float_val, "int8": int8_val},
        "test_top1": {"fp32": top1(model, data.test), "int8": top1(q.module, data.test)}
        if data.test is not None
        else None,
        "estimated_energy_j": {
            "fp32": fp32.total.energy_j,
            "int8": int8.total.energy_j,
            "hardware": fp32.hardware,
        },
        "latency_ms_cpu_eager": {
            "fp32": median_latency_ms(model, x1),
            "int8": median_latency_ms(q.module, x1),
            "note": "eager int8 runs reference (quantize/dequantize) "
            "kernels; int8 kernels need torch.compile",
        },
    }
    save_quantized(q, args.out)
    atomic_write_text(Path(args.out) / "quant_report.json", json.dumps(report, indent=2) + "\n")
    table = Table(
        title=f"{name}: fp32 vs int8 ({len(skip)} layers kept in float)", title_justify="left"
    )
    for column in ("metric", "fp32", "int8"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    table.add_row("validation top-1", f"{100 * float_val:.2f} %", f"{100 * int8_val:.2f} %")
    if report["test_top1"]:
        t = report["test_top1"]
        table.add_row("test top-1", f"{100 * t['fp32']:.2f} %", f"{100 * t['int8']:.2f} %")
    e = report["estimated_energy_j"]
    table.add_row(
        f"energy, estimated ({e['hardware']})", f"{e['fp32']:.4g} J", f"{e['int8']:.4g} J"
    )
    lat = report["latency_ms_cpu_eager"]
    table.add_row(
        "latency, measured (CPU, eager)", f"{lat['fp32']:.3f} ms", f"{lat['int8']:.3f} ms"
    )
    console.print(table)
    if lat["int8"] >= lat["fp32"]:
        console.print(
            "[yellow]int8 measured slower than fp32 here (eager reference kernels): "
            "not recommended for this deployment unless compiled[/]"
        )
    console.print(f"wrote {args.out}/model.pt2, quant.json, quant_report.json")
    return 0


def _most_sensitive(model, example, data, layers, skip, top1, args) -> str:
    """The layer whose int8 alone costs the most validation accuracy."""
    from energyprune.pruning.quantize import quantize_int8

    candidates = [name for name in layers if name not in skip]
    drops = {}
    for name in candidates:
        others = [n for n in layers if n != name]
        q = quantize_int8(
            model, example, data.val, skip=others, max_batches=args.calibration_batches
        )
        drops[name] = -top1(q.module, data.val)
    return max(drops, key=drops.get)
