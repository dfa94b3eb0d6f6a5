"""``energyprune calibrate``: fit a hardware profile to measurements, live or from a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a hardware profile to measured energy (live, or from a measurement table)",
        description="Live: measure a designed set of variants (conv/linear stacks over widths "
        "incl. non-multiples of 8/16, batch sizes, dtypes, whole models) with the device's meter "
        "and fit the profile's costs. With --from: fit to a table of measurements made anywhere "
        "(CSV or JSON lines; docs/measurement.md). Reports held-out ordering agreement (all and "
        "close pairs) and MAPE beside plain MACs and the uncalibrated base profile.",
        epilog="examples:\n  energyprune calibrate --device cuda --out h100.yaml\n"
        "  energyprune calibrate --from jetson.csv --base gpu-generic --out jetson.yaml\n"
        "  energyprune calibrate --from runs/ --fit latency_ms --out cpu-latency.yaml\n"
        "  energyprune calibrate --from llm-tokens.csv --base h100-sxm --out h100-llm.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="source", metavar="FILE|DIR", help="measurement table(s)")
    p.add_argument("--out", required=True, metavar="PROFILE.yaml", help="profile to write")
    p.add_argument("--report", metavar="PATH", help="fidelity report JSON (default: beside --out)")
    p.add_argument(
        "--base",
        help="profile whose structure is refitted (default gpu-generic; h100-sxm-datasheet "
        "for joules_per_token)",
    )
    p.add_argument("--name", help="name of the fitted profile")
    p.add_argument("--heldout", type=float, default=0.25, help="share of rows held out")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    p.add_argument(
        "--split",
        choices=("group", "random", "each"),
        default="group",
        help="hold out whole families (a model, a block family: the default, which measures "
        "transfer) or rows at random (interpolation); the report shows both. each (per-token "
        "tables): every model held out in turn, the profile fitted on all rows",
    )
    table = p.add_argument_group("from a table (--from)")
    table.add_argument(
        "--fit",
        choices=("joules_per_sample", "latency_ms", "joules_per_token"),
        help="column to fit (default: joules_per_token when the table has it, else "
        "joules_per_sample); latency_ms makes wall-clock latency stand in for a meter; "
        "joules_per_token fits a timed profile to language-model rows",
    )
    table.add_argument("--skip-bad", action="store_true", help="fit without the bad rows")
    live = p.add_argument_group("live (without --from)")
    live.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (needs a meter)")
    live.add_argument("--quick", action="store_true", help="a smaller variant grid")
    live.add_argument("--seconds", type=float, default=0.5, help="minimum window per variant (s)")
    live.add_argument("--windows", type=int, default=3, help="windows per variant")
    p.set_defaults(run=_run_calibrate)


def _run_calibrate(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from energyprune.energy.calibration.fit import FitSpec
    from energyprune.energy.calibration.profile_file import write_calibration
    from energyprune.options import build

    build(FitSpec, **_fit_settings(args))  # bad settings fail before any work, on every path
    if args.source is None:
        from energyprune.energy.measurement.meters import open_meter

        open_meter(args.device)  # fail fast, before any work, if there is none
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(done: int, total: int, name: str) -> None:
            verb = "tracing" if args.source else "measuring"
            bar.update(task, completed=done, total=total, description=f"{verb} {name[:40]}")

        result = _from_table(args, progress) if args.source else _live(args, progress)
    report_path = args.report or str(Path(args.out).with_suffix(".json"))
    write_calibration(result, args.out, report_path)
    _summary(result.report, console)
    console.print(f"wrote {args.out} and {report_path}")
    return 0


def _live(args: argparse.Namespace, progress):
    from energyprune.energy.calibration.live import calibrate
    from energyprune.energy.measurement.protocol import MeasurementProtocol

    protocol = MeasurementProtocol(
        min_window_s=args.seconds, windows=args.windows, warmup_s=0.3, idle_s=0.0
    )
    return calibrate(
        args.device,
        base=args.base or "gpu-generic",
        quick=args.quick,
        protocol=protocol,
        progress=progress,
        **_fit_settings(args),
    )


def _fit_settings(args: argparse.Namespace) -> dict:
    """The FitSpec fields the command line sets (checked once, by FitSpec)."""
    return {
        "name": args.name,
        "heldout_fraction": args.heldout,
        "seed": args.seed,
        "split": args.split,
    }


def _fitted_column(args: argparse.Namespace) -> str:
    """--fit, else joules_per_token when the table's first row has that column."""
    if args.fit:
        return args.fit
    from energyprune.energy.calibration.tables import table_records

    first = next(iter(table_records(args.source)), None)
    record = first[3] if first else None
    return (
        "joules_per_token"
        if isinstance(record, dict) and "joules_per_token" in record
        else ("joules_per_sample")
    )


def _from_tokens(args: argparse.Namespace, progress):
    from energyprune.energy.calibration.per_token import calibrate_lm_from

    return calibrate_lm_from(
        args.source,
        base=args.base or "h100-sxm-datasheet",
        skip_bad=args.skip_bad,
        progress=progress,
        **_fit_settings(args),
    )


def _from_table(args: argparse.Namespace, progress):
    from energyprune.energy.calibration.from_table import calibrate_from, resolve_model

    column = _fitted_column(args)
    if column == "joules_per_token":
        return _from_tokens(args, progress)

    def resolve(spec: str, weights: str | None):
        if Path(spec).is_dir():  # a folder written by `prune --out`
            from energyprune.pruning.export import load

            return load(spec)[0]
        return resolve_model(spec, weights)

    return calibrate_from(
        args.source,
        base=args.base or "gpu-generic",
        column=column,
        skip_bad=args.skip_bad,
        resolve=resolve,
        progress=progress,
        **_fit_settings(args),
    )


def _summary(rep: dict, console: Console) -> None:
    """The report in a few lines, by the kind of fit that wrote it (``fit``)."""
    {"per-token": _token_summary, "timed": _sample_summary, "linear": _sample_summary}[rep["fit"]](
        rep, console
    )


def _sample_summary(rep: dict, console: Console) -> None:
    what = "latency (stand-in for energy)" if rep.get("fitted_column") == "latency_ms" else "energy"
    console.print(
        f"held-out ordering of {what}, all pairs / close pairs (MACs within 2x): fitted "
        f"{rep['pairwise_agreement']:.3f} / {rep['close_pair_agreement']:.3f} · plain MACs "
        f"{rep['macs_pairwise_agreement']:.3f} / {rep['macs_close_pair_agreement']:.3f} · "
        f"{rep['base_profile']} uncalibrated {rep['base_pairwise_agreement']:.3f} / "
        f"{rep['base_close_pair_agreement']:.3f}",
        soft_wrap=True,
    )
    console.print(
        f"MAPE fitted {100 * rep['mape']:.1f} % · MACs {100 * rep['macs_mape']:.1f} % · "
        f"{rep['n_train']} train / {rep['n_heldout']} held out "
        f"({rep['n_close_pairs_heldout']} close pairs) · {rep['device']}",
        soft_wrap=True,
    )
    _split_summary(rep, console)
    if rep["fit"] == "timed":
        _time_summary(rep, console)
    if rep.get("bad_rows"):
        console.print(f"skipped {len(rep['bad_rows'])} bad row(s), listed in the report")


def _split_summary(rep: dict, console: Console) -> None:
    """How the rows were held out, and the same fit judged on the other split."""
    if rep.get("split") == "group":
        held = f"{len(rep['heldout_families'])} whole families held out (--split group)"
        other = rep.get("random_split")
    else:
        held, other = "rows held out at random (--split random)", rep.get("group_split")
    line = held
    if other:
        line += (
            f"; on the other split the fit orders {other['pairwise_agreement']:.3f} of pairs "
            f"(MACs {other['macs_pairwise_agreement']:.3f}), MAPE {100 * other['mape']:.1f} %"
        )
    console.print(f"{line} · pull toward the base {rep.get('shrink', 0.0):g}", soft_wrap=True)
    peaks = rep.get("implied_peak_w")
    if peaks and rep.get("max_w"):
        spec, watts = max(peaks.items(), key=lambda kv: kv[1])
        console.print(
            f"implied power: {watts:.1f} W at most ({spec}), within the {rep['max_w']:g} W maximum"
        )


def _time_summary(rep: dict, console: Console) -> None:
    console.print(
        f"held-out latency: ordering fitted {rep['latency_fitted_pairwise_agreement']:.3f} · "
        f"MACs {rep['latency_macs_pairwise_agreement']:.3f} · MAPE fitted "
        f"{100 * rep['latency_fitted_mape']:.1f} % · MACs {100 * rep['latency_macs_mape']:.1f} %"
        f" · {rep['base_profile']} {100 * rep['latency_base_mape']:.1f} %",
        soft_wrap=True,
    )
    console.print(
        f"fitted time: {rep['compute_efficiency']:.1%} of peak FLOP/s, "
        f"{rep['bandwidth_efficiency']:.1%} of peak bandwidth, {1e3 * rep['forward_s']:.3f} ms "
        f"per forward, {1e6 * rep['launch_s']:.1f} us per launch; static {rep['static_w']:.2f} W"
        f" + {rep.get('active_w', 0.0):.2f} W while kernels run",
        soft_wrap=True,
    )
    runtime = rep.get("runtime") or {}
    if runtime:
        effs = ", ".join(f"{k} {v:.1%}" for k, v in runtime["efficiency"].items()) or "none"
        kinds = ", ".join(f"{k} {1e6 * v:.1f} us" for k, v in runtime["launch_s"].items())
        console.print(
            f"runtime: fused epilogues {'yes' if runtime['fuse_epilogues'] else 'no'} · occupancy "
            f"at {runtime['occupancy_outputs']:,.0f} outputs · kernel efficiency {effs} · "
            f"launch per kind {kinds or 'none'}",
            soft_wrap=True,
        )


def _fixed(value: float | None) -> str:
    return "n/a (too few rows)" if value is None else f"{value:.3f}"


def _token_summary(rep: dict, console: Console) -> None:
    itl = rep["itl_mape"]
    latency = f" · inter-token latency {100 * itl:.1f} %" if itl is not None else ""
    console.print(
        f"held-out MAPE of J/token: fitted {100 * rep['mape']:.1f} %{latency} · "
        f"{rep['baseline']}: {100 * rep['baseline_mape']:.1f} % · {rep['base_profile']} "
        f"uncalibrated {100 * rep['base_mape']:.1f} % · Spearman {_fixed(rep['spearman'])}",
        soft_wrap=True,
    )
    for model, e in rep["by_model"].items():
        itl = f", latency {100 * e['itl_mape']:.1f} %" if e["itl_mape"] is not None else ""
        console.print(
            f"  held out {model}: J/token {100 * e['mape']:.1f} %{itl} ({e['n_rows']} rows)"
        )
    console.print(
        f"fitted: {rep['compute_efficiency']:.0%} of peak FLOP/s, {rep['bandwidth_efficiency']:.0%}"
        f" of peak bandwidth, kernel floor {rep['graph_kernel_s'] * 1e6:.2f} us, "
        f"{rep['graph_step_s'] * 1e3:.2f} ms per step, static {rep['static_w']:.1f} W, busy "
        f"{rep['active_w']:.1f} W · {rep['n_train']} train / {rep['n_heldout']} held out · "
        f"{rep['device']}",
        soft_wrap=True,
    )
    if rep.get("bad_rows"):
        console.print(f"skipped {len(rep['bad_rows'])} bad row(s), listed in the report")
