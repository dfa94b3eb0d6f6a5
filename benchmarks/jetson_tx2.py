"""HW-NAS-Bench's Jetson TX2 measurements of FBNet blocks as a ``calibrate --from`` table.

    python benchmarks/jetson_tx2.py --out benchmarks/results/jetson_tx2_table.csv

One row per measured block (``../shared/measurements/jetson-tx2-fbnet-blocks.csv``, MIT, see
its README), with its family (block type, input size, channels, stride: what a grouped held-out
split keeps together): the block as a model spec (``fbnet:NAME``, built by
:mod:`energyprune.models.fbnet` as HW-NAS-Bench built it), its batch-1 input, fp32, the
measured energy per sample and the measured latency. The energy is **gross**: mean module
input power (VDD_IN, INA3221, ~10 Hz) x mean latency over 50 TensorRT runs, idle power
included. Identity ``Skip`` blocks (0.0 in the table: they run nothing) are left out, and the
count is printed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "measurements"
SOURCE = SHARED / "jetson-tx2-fbnet-blocks.csv"
DEVICE = "jetson-tx2 (TensorRT fp32, batch 1)"
COLUMNS = ("model", "family", "input_shape", "dtype", "joules_per_sample", "latency_ms", "device",
           "gross_or_active", "source")  # fmt: skip


def family(record: dict[str, str]) -> str:
    """The block family a block is held out with: its type, input size, channels and stride
    (the 8 ConvBlocks that differ only in expansion, kernel and groups are one family)."""
    r = record
    return f"{r['block_type']}_H{r['H']}_Cin{r['cin']}_Cout{r['cout']}_stride{r['stride']}"


def table_rows(source: Path = SOURCE) -> tuple[list[dict[str, str]], list[str]]:
    """(calibration rows, blocks left out because they ran nothing)."""
    from energyprune.models.zoo import build_model

    rows, skipped = [], []
    with source.open(newline="") as f:
        for record in csv.DictReader(f):
            energy_mj, latency_ms = float(record["tx2_energy_mJ"]), float(record["tx2_latency_ms"])
            if energy_mj <= 0 or latency_ms <= 0:
                skipped.append(record["block"])
                continue
            spec = f"fbnet:{record['block']}"
            shape = build_model(spec).input_shape
            rows.append({
                "model": spec, "family": family(record),
                "input_shape": ",".join(map(str, shape)), "dtype": "fp32",
                "joules_per_sample": repr(energy_mj / 1000.0), "latency_ms": repr(latency_ms),
                "device": DEVICE, "gross_or_active": "gross",
                "source": "HW-NAS-Bench FBNet lookup table (MIT)",
            })  # fmt: skip
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/jetson_tx2_table.csv"))
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"error: {args.source} not found (it ships in ../shared)", file=sys.stderr)
        return 2
    rows, skipped = table_rows(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}: {len(rows)} blocks; left out {len(skipped)} identity Skip blocks "
          "that run nothing")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
