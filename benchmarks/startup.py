"""How fast the CLI answers: ``energyprune --help`` and one-line errors vs ``import torch``.

Every case runs in a fresh process, ``--repeats`` rounds interleaved (so a burst of load hits
every case alike); the figure is each case's median wall time over the median of
``python -c "import torch"`` (the floor: every command needs torch). The goal is <= 1.3x on an
idle machine. Writes JSON with the machine's load average at the start.

    python benchmarks/startup.py --out benchmarks/results/startup.json
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

GOAL = 1.3
CLI = [sys.executable, "-m", "energyprune.cli"]
CASES = {
    "import torch": ([sys.executable, "-c", "import torch"], 0),
    "energyprune --help": ([*CLI, "--help"], 0),
    "prune --help": ([*CLI, "prune", "--help"], 0),
    "error: --target-energy 50": (
        [*CLI, "prune", "resnet20", "--target-energy", "50", "--out", "{tmp}"],
        2,
    ),
    "error: unknown model": ([*CLI, "profile", "resnet2O"], 2),
    "error: unknown profile": ([*CLI, "profile", "resnet20", "--hardware", "horowitz45"], 2),
}


def _once(argv: list[str], code: int, tmp: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([a.format(tmp=tmp) for a in argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != code:
        raise SystemExit(f"{argv[2:]} exited {done.returncode}, not {code}: {done.stderr[-300:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    walls: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, (command, code) in CASES.items():
                walls[name].append(_once(command, code, str(Path(tmp) / "out")))
    floor = statistics.median(walls["import torch"])
    cases = {
        name: {"wall_s": w, "median_s": statistics.median(w),
               "ratio_to_import_torch": statistics.median(w) / floor}
        for name, w in walls.items()
    }  # fmt: skip
    result = {
        **provenance(__file__, argv),
        "load_average_1min_at_start": load,
        "cpu_count": os.cpu_count(),
        "goal_ratio": GOAL,
        "cases": cases,
        "meets_goal": all(c["ratio_to_import_torch"] <= GOAL for c in cases.values()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, c in cases.items():
        print(f"{name:32s} {c['median_s']:.2f} s  {c['ratio_to_import_torch']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
