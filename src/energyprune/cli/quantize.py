"""`energyprune quantize`: int8 post-training quantisation of a model or a pruned folder."""

from __future__ import annotations

import argparse

from rich.console import Console

from energyprune.cli.common import (
    add_val_from,
    load_data_with_bar,
    load_source,
    model_help,
    verdict_colour,
)
from energyprune.cli.progress import status
from energyprune.errors import ConfigError
from energyprune.pruning.plan import PruningPlan


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
    p.add_argument("model", help=model_help(folders=True))
    p.add_argument("--weights", help="weights for a model spec")
    p.add_argument("--input-shape", help="input shape (default from the data)")
    p.add_argument("--data", default="digits", help="digits | cifar10:PATH | ...")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--calibration-batches", type=int, default=8)
    p.add_argument("--max-acc-drop", type=float, default=0.5, help="guardrail in points")
    p.add_argument("--hardware", default="horowitz-45nm")
    p.add_argument("--batch-size", type=int, default=128)
    add_val_from(p)
    add_int8_args(p)
    p.set_defaults(run=run_quantize)


def add_int8_args(p: argparse.ArgumentParser) -> None:
    """Options of the int8 step shared by `quantize` and `prune --quantize int8`."""
    g = p.add_argument_group("int8 step")
    g.add_argument(
        "--no-qat",
        action="store_true",
        help="never try the short quantisation-aware fine-tune when post-training int8 fails",
    )
    g.add_argument(
        "--eager",
        action="store_true",
        help="measure eager latency (default: torch.compile with freezing, which int8 needs)",
    )
    g.add_argument(
        "--measure-batch",
        type=int,
        default=1,
        metavar="N",
        help="batch size of the fp32-vs-int8 measurement (your deployment's; default 1)",
    )
    g.add_argument("--seconds", type=float, default=1.0, help="minimum measurement window (s)")
    g.add_argument("--windows", type=int, default=5, help="measurement windows per model")


def int8_settings(args: argparse.Namespace) -> dict:
    from energyprune.energy.measurement.protocol import MeasurementProtocol
    from energyprune.pipeline.int8 import QAT

    if args.measure_batch < 1:
        raise ConfigError(f"--measure-batch must be >= 1, got {args.measure_batch}")
    return {
        "qat": None if args.no_qat else QAT,
        "compile": not args.eager,
        "measure_batch": args.measure_batch,
        "protocol": MeasurementProtocol(
            min_window_s=args.seconds,
            windows=args.windows,
            warmup_s=min(1.0, args.seconds),
            idle_s=min(2.0, 2 * args.seconds),
        ),
    }


def run_quantize(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pipeline.driver import check_compatible

    model, name, shape, plan = load_source(args)
    data = load_data_with_bar(console, args)
    check_compatible(model, data, name)
    plan = plan or PruningPlan.unpruned(model, name, shape, args.hardware)
    write_int8(
        model,
        plan,
        data,
        args.out,
        console,
        hardware=args.hardware,
        max_acc_drop=args.max_acc_drop,
        calibration_batches=args.calibration_batches,
        **int8_settings(args),
    )
    return 0


def write_int8(model, plan: PruningPlan, data, out, console: Console, **settings) -> dict:
    """Quantise with the guardrail; save model.pt2 + quant.json, the float twin (plan.json with
    the mixed-precision plan + model.safetensors) and quant_report.json; print the verdict."""
    from energyprune.pipeline.int8 import int8_with_guardrail, save_int8
    from energyprune.reports.report import int8_table

    with status(console, "quantising to int8 and measuring fp32 vs int8"):
        q, report = int8_with_guardrail(model, data, plan.arch["name"], **settings)
    save_int8(q, report, model, plan, out)
    console.print(int8_table(report))
    verdict = report["measurement"]["verdict"]
    console.print(f"[{verdict_colour(report['recommended'])}]{verdict}[/]")
    console.print(
        f"wrote {out}/model.pt2, quant.json, plan.json, model.safetensors, quant_report.json"
    )
    return report
