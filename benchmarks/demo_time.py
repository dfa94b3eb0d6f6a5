"""The demo's promise, timed: ``energyprune demo`` under 2 minutes on 2 cores.

Tests never assert wall time (the machine may be busy); this benchmark does the timing, runs the
demo ``--repeats`` times in fresh processes (import time included, as a newcomer sees it) and
writes the median and spread, plus the machine's load average at the start, to JSON.

    python benchmarks/demo_time.py --out benchmarks/results/demo_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

PROMISE_S = 120.0


def _one_run() -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "energyprune.cli", "demo", "--out", tmp],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"demo failed ({done.returncode}): {done.stderr[-400:]}")
        report = json.loads((Path(tmp) / "report.json").read_text())
    return wall, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/demo_time.json")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    walls, report = [], {}
    for i in range(args.repeats):
        wall, report = _one_run()
        walls.append(wall)
        print(f"run {i + 1}/{args.repeats}: {wall:.1f} s", file=sys.stderr, flush=True)
    median = statistics.median(walls)
    result = {
        **provenance(__file__, argv),
        "load_average_1min_at_start": load,
        "cpu_count": os.cpu_count(),
        "wall_s": walls,
        "median_s": median,
        "promise_s": PROMISE_S,
        "meets_promise": median < PROMISE_S,
        "energy_reduction": report.get("energy_reduction"),
        "accuracy_drop_pt": report.get("accuracy_drop"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
