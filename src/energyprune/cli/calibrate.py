"""``energyprune calibrate``: fit a hardware profile to measurements on this device."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a hardware profile to measured energy on this device",
        description="Measure a designed set of variants (conv/linear stacks over widths incl. "
        "non-multiples of 8/16, batch sizes, dtypes, whole models) with the device's meter and "
        "fit the profile's costs; reports held-out ordering agreement and MAPE vs plain MACs.",
        epilog="example:\n  energyprune calibrate --device cuda --out h100.yaml "
        "--report calibration_h100.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (needs a meter)")
    p.add_argument("--out", required=True, metavar="PROFILE.yaml", help="profile to write")
    p.add_argument("--report", metavar="PATH", help="fidelity report JSON (default: beside --out)")
    p.add_argument("--base", default="gpu-generic", help="profile whose structure is refitted")
    p.add_argument("--name", help="name of the fitted profile")
    p.add_argument("--quick", action="store_true", help="a smaller variant grid")
    p.add_argument("--seconds", type=float, default=0.5, help="minimum window per variant (s)")
    p.add_argument("--windows", type=int, default=3, help="windows per variant")
    p.set_defaults(run=_run_calibrate)


def _run_calibrate(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from energyprune.energy.calibrate import calibrate, write_calibration
    from energyprune.energy.meter import open_meter

    backend = open_meter(args.device).backend  # fail fast, before any work, if there is none
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"measuring {name}")

        result = calibrate(
            args.device,
            base=args.base,
            name=args.name,
            quick=args.quick,
            seconds=args.seconds,
            windows=args.windows,
            progress=progress,
        )
    report_path = args.report or str(Path(args.out).with_suffix(".json"))
    write_calibration(result, args.out, report_path, backend)
    rep = result.report
    console.print(
        f"held-out pairwise agreement {rep['pairwise_agreement']:.3f} (plain MACs "
        f"{rep['macs_pairwise_agreement']:.3f}) · MAPE {100 * rep['mape']:.1f} % (MACs "
        f"{100 * rep['macs_mape']:.1f} %) · {rep['n_train']} train / {rep['n_heldout']} held out "
        f"· {rep['device']}",
        soft_wrap=True,
    )
    console.print(f"wrote {args.out} and {report_path}")
    return 0
