"""``energyprune export``: a saved pruned model to ONNX."""

from __future__ import annotations

import argparse

from rich.console import Console


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a pruned model folder to ONNX",
        description="Rebuild a pruned model from DIR (plan.json + model.safetensors) and export "
        "it to ONNX with a dynamic batch dimension.",
    )
    p.add_argument("dir", help="folder written by `energyprune prune --out`")
    p.add_argument("--onnx", required=True, metavar="PATH", help="ONNX file to write")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pruning.export import export_onnx, load

    model, plan = load(args.dir)
    export_onnx(model, plan.example_input(model), args.onnx)
    console.print(f"wrote {args.onnx}")
    return 0
