"""`energyprune measure` and `energyprune calibrate`: meters and fitted profiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console

from energyprune.cli.common import add_model_args, load_source, shape_error, verdict_colour
from energyprune.cli.measure_lm import add_lm_args, is_measured_lm, refuse_lm_flags, run_lm
from energyprune.cli.progress import status
from energyprune.errors import ConfigError, EnergyPruneError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input

if TYPE_CHECKING:
    from energyprune.energy.measurement.protocol import MeasurementProtocol


def add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure energy per sample and latency with a real meter",
        description="Measure joules per sample (NVML, RAPL, or a Jetson's or Apple silicon's "
        "rails, through Zeus) and latency, following docs/measurement.md. Without a meter the "
        "result says measured: false and carries the labelled estimate; latency is always "
        "measured. MODEL may be a folder written by `prune --out` or `quantize --out`; an int8 "
        "folder is measured against its float twin. A language model is measured per token: "
        "a decode step at a fixed context (or a prefill) in a static KV cache.",
        epilog="examples:\n  energyprune measure resnet56 --device cuda --batch-size 1024 "
        "--dtype fp16 --channels-last\n  energyprune measure resnet20 --device cpu --json m.json\n"
        "  energyprune measure out/int8 --device cpu --compile --batch-size 64\n"
        "  energyprune measure smollm2-135m --phase decode --batch 4 --context 1024\n"
        "  energyprune measure hf:llama/config.json --device cuda --batch 64 --cuda-graph",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p, folders=True)
    p.add_argument(
        "--device",
        help="cpu, cuda or cuda:N (default: cuda when available; cpu for an int8 folder)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="batch size (default: the input shape's); for a language model, --batch",
    )
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="cast model and input")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--cuda-graph", action="store_true", help="replay a captured CUDA graph")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--int8",
        action="store_true",
        help="torchao dynamic int8 for Linear layers (the GPU int8 path; convolutions stay in "
        "--dtype: torchao has no int8 convolution)",
    )
    p.add_argument("--seconds", type=float, default=1.0, help="minimum window length (s)")
    p.add_argument("--windows", type=int, default=5, help="number of energy windows")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds")
    p.add_argument("--idle", type=float, default=2.0, help="idle-power window (s)")
    p.add_argument("--no-meter", action="store_true", help="latency only; energy is estimated")
    p.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    add_lm_args(p)
    p.set_defaults(run=_run_measure)


def _run_measure(args: argparse.Namespace, console: Console) -> int:
    from energyprune.energy.measurement.protocol import measure  # lazily: --help is fast
    from energyprune.reports.measured import measurement_table

    if is_measured_lm(args.model):
        return run_lm(args, console, protocol_of(args))
    refuse_lm_flags(args)
    model, name, shape, plan = load_source(args)
    if plan is not None:
        name = f"{name} ({Path(args.model).name})"
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        shape = (args.batch_size, *shape[1:])
    protocol = protocol_of(args)
    if (Path(args.model) / "model.pt2").is_file():
        args.device = args.device or "cpu"
        return _measure_int8(args, console, model, name, shape, protocol)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with status(console, f"measuring {name}") as update:
        try:
            result = measure(
                model,
                example_input(model, shape),
                device=args.device,
                meter=None if args.no_meter else "auto",
                dtype=args.dtype,
                channels_last=args.channels_last,
                cuda_graph=args.cuda_graph,
                compile=args.compile,
                int8_linear=args.int8,
                protocol=protocol,
                progress=lambda stage: update(f"measuring {name}: {stage}"),
            )
        except (RuntimeError, ValueError, IndexError) as e:
            if isinstance(e, EnergyPruneError):
                raise
            raise shape_error(name, shape, e) from e
    console.print(measurement_table(result, name))
    if args.int8:
        _int8_coverage(model, shape, result.settings["int8_layers"], args.dtype, console)
    if args.json:
        # what was measured travels with the figures, so the file is a calibration row too
        row = {"model": args.model, "input_shape": list(shape), "weights": args.weights}
        atomic_write_text(args.json, json.dumps({**row, **result.to_dict()}, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def _int8_coverage(model, shape, layers: list[str], dtype: str | None, console: Console) -> None:
    """How much of the model the torchao int8 path covers: for a CNN, little."""
    from energyprune.pipeline.int8 import int8_mac_share

    share = int8_mac_share(model.cpu(), example_input(model, shape), layers)
    console.print(
        f"int8 (torchao, Linear layers only): {len(layers)} layer(s), {share:.2%} of the MACs; "
        f"the rest runs in {dtype or 'fp32'}"
    )


def _measure_int8(
    args, console: Console, model, name: str, shape, protocol: MeasurementProtocol
) -> int:
    """An int8 folder: measure it against its float twin, same settings, and give the verdict."""
    from rich.table import Table

    from energyprune.deploy.quantize import load_quantized
    from energyprune.pipeline.int8 import compare_int8
    from energyprune.reports.report import fmt_joules, int8_measurement_rows

    unsupported = [
        flag
        for flag, on in (
            ("--device " + args.device, args.device != "cpu"),
            ("--dtype", args.dtype is not None),
            ("--channels-last", args.channels_last),
            ("--cuda-graph", args.cuda_graph),
            ("--int8", args.int8),
        )
        if on
    ]
    if unsupported:
        raise ConfigError(
            f"{args.model} is an x86 int8 (PT2E) model: {unsupported[0]} does not apply; "
            "measure it with --device cpu [--compile]"
        )
    q = load_quantized(args.model)
    with status(console, f"measuring {name}: fp32 and int8"):
        result = compare_int8(
            model,
            q,
            example_input(model, shape),
            compile=args.compile,
            protocol=protocol,
            meter=None if args.no_meter else "auto",
        )
    table = Table(title=f"{name}: fp32 vs int8 on {result['int8']['device']}", title_justify="left")
    for column in ("metric", "fp32", "int8"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in int8_measurement_rows(result):
        table.add_row(*row)
    if result["measured_joules_per_sample"] is None:
        est = {k: result[k]["estimate"] for k in ("fp32", "int8")}
        table.add_row(
            f"energy per sample, ESTIMATED ({est['fp32']['hardware']})",
            fmt_joules(est["fp32"]["joules_per_sample"]),
            fmt_joules(est["int8"]["joules_per_sample"]),
        )
    console.print(table)
    if result["measured_joules_per_sample"] is None:
        console.print(f"energy not measured: {result['int8']['unavailable_reason']}")
    console.print(f"[{verdict_colour(result['recommended'])}]{result['verdict']}[/]")
    if not args.compile:
        console.print("eager int8 runs reference (quantize/dequantize) kernels: add --compile")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def protocol_of(args: argparse.Namespace):
    from energyprune.energy.measurement.protocol import MeasurementProtocol

    return MeasurementProtocol(
        min_window_s=args.seconds, windows=args.windows, warmup_s=args.warmup, idle_s=args.idle
    )
