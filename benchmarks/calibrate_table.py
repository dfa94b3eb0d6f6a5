"""Calibrate from a measurement table made on this machine (issue 14).

    python benchmarks/calibrate_table.py --out benchmarks/results/calibrate_table
    [--bases gpu-generic,horowitz-45nm] [--seeds 0,1,2] [--device cpu]

1. Writes ``table.csv``: a sweep of single layers (Conv2d over input/output widths incl.
   non-multiples of 8, kernels 1/3, 8-32 px, batch 1/8; Linear over widths, 1-64 tokens;
   depthwise convs) and the built-in models, each measured on ``--device``.
   On CPU there is no energy meter here, so the column is **latency_ms** (median wall-clock of a
   whole batch): latency stands in for a meter, and every figure this writes says so. On a CUDA
   device with NVML (through Zeus) it also writes ``joules_per_sample``, measured.
2. Runs ``energyprune calibrate --from table.csv`` for each base profile and held-out seed and
   writes ``summary.json``: held-out ordering agreement (all pairs, close pairs = MACs within 2x)
   and MAPE of the fitted profile, of plain MACs and of the base profile uncalibrated.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from energyprune.cli import main as cli
from energyprune.energy.measurement.meters import cpu_name
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.models.zoo import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance


def configs() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for cin, cout, k, px, bs in itertools.product(
        (3, 16, 30, 32, 64), (16, 24, 30, 32, 60, 64), (1, 3), (8, 16, 32), (1, 8)
    ):
        rows.append(
            (f"Conv2d({cin}, {cout}, {k}, padding={k // 2}, bias=False)", (bs, cin, px, px))
        )
    for c, px, bs in itertools.product((16, 32, 60, 64, 96), (16, 32), (1, 8)):
        rows.append((f"Conv2d({c}, {c}, 3, padding=1, groups={c}, bias=False)", (bs, c, px, px)))
    for fin, fout, tokens in itertools.product(
        (64, 100, 128, 256, 500, 512), (64, 128, 250, 256), (1, 16, 64)
    ):
        rows.append((f"Linear({fin}, {fout})", (tokens, fin)))
    for name in ("digits_cnn", "resnet20", "resnet56", "vgg16_bn"):
        shape = build_model(name).input_shape
        rows += [(name, (bs, *shape[1:])) for bs in (1, 8)]
    return rows


def latency_ms(model: torch.nn.Module, x: torch.Tensor, device: str, budget_s: float) -> float:
    """Median wall-clock ms per forward of the batch (5 timed runs after a warm-up)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        sync()
        start = time.perf_counter()
        model(x)
        sync()
        once = max(time.perf_counter() - start, 1e-6)
        n = max(1, int(budget_s / 5 / once))
        runs = []
        for _ in range(5):
            sync()
            start = time.perf_counter()
            for _ in range(n):
                model(x)
            sync()
            runs.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(runs)


def write_table(path: Path, device: str, budget_s: float) -> int:
    rows = configs()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "input_shape", "dtype", "latency_ms", "device"])
        for i, (spec, shape) in enumerate(rows):
            model = build_model(spec).model.eval().to(device)
            ms = latency_ms(model, example_input(model, shape), device, budget_s)
            writer.writerow([spec, ",".join(map(str, shape)), "fp32", f"{ms:.6g}", cpu_name()])
            if i % 50 == 0:
                print(f"{i}/{len(rows)} {spec} {shape}: {ms:.4f} ms", flush=True)
    return len(rows)


KEYS = ("pairwise_agreement", "close_pair_agreement", "mape")


def fit(table: Path, out: Path, base: str, seed: int) -> dict:
    profile, report = out / f"{base}-seed{seed}.yaml", out / f"{base}-seed{seed}.json"
    argv = ["calibrate", "--from", str(table), "--fit", "latency_ms", "--base", base]
    start = time.perf_counter()
    code = cli([*argv, "--seed", str(seed), "--out", str(profile), "--report", str(report)])
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"calibrate exited {code}")
    rep = json.loads(report.read_text())
    return {
        "base": base,
        "seed": seed,
        "seconds": round(seconds, 2),
        "n_train": rep["n_train"],
        "n_heldout": rep["n_heldout"],
        "n_close_pairs_heldout": rep["n_close_pairs_heldout"],
        **{
            who: {k: rep[p + k] for k in KEYS}
            for who, p in (("fitted", ""), ("macs", "macs_"), ("uncalibrated", "base_"))
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bases", default="gpu-generic,horowitz-45nm")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget-s", type=float, default=0.25, help="timing seconds per row")
    p.add_argument("--reuse", action="store_true", help="refit an existing table.csv")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table.csv"
    start = time.perf_counter()
    n = None if args.reuse else write_table(table, args.device, args.budget_s)
    measure_s = time.perf_counter() - start
    fits = [
        fit(table, out, base, int(seed))
        for base in args.bases.split(",")
        for seed in args.seeds.split(",")
    ]
    summary = {
        **provenance(__file__, argv, args.device),
        "label": "wall-clock latency standing in for a meter (no energy meter on this machine): "
        "agreement is about ordering latency, not energy",
        "rows": n,
        "measure_seconds": round(measure_s, 1),
        "fits": fits,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(fits, indent=1))


if __name__ == "__main__":
    main()
