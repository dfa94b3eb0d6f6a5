"""`energyprune demo` and `energyprune search`."""

from __future__ import annotations

import argparse

from rich.console import Console

from energyprune.cli.progress import Progress


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a digits CNN, prune it to 50 %% energy with fine-tuning, write a report",
        description="The main job on built-in data: trains digits_cnn on scikit-learn's digits, "
        "prunes it to 50 %% of its estimated energy in 3 fine-tuned steps with a 1-point "
        "accuracy guardrail, prints the before/after table and writes the report.",
    )
    p.add_argument("--out", default="demo-output", metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pipeline.demo import DEMO_CONFIG, demo
    from energyprune.reports.report import run_table

    with Progress(console, DEMO_CONFIG.steps) as bar:
        result = demo(
            args.out,
            args.seed,
            log=bar.log,
            on_batch=bar.on_batch,
            on_step=bar.on_step,
            on_pretrain_batch=bar.for_stage("pre-training"),
        )
    if result is None:
        return 130
    console.print(run_table(result.report))
    console.print(f"wrote {args.out}/report.json, report.md and plots")
    return 0
