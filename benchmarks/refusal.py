"""How fast a model that channel pruning cannot serve is refused: Swin-T at target 0.5 (issue 38).

Torch-Pruning cannot list Swin-T's groups whole (its index sets grow without bound, see
src/energyprune/pruning/index_sets.py), and the channels inside its parts reach ~52 % of dense,
so ``energyprune.prune(swin_t(), x, target_energy=0.5)`` ends in a one-line ConfigError. Each
run is a fresh process; the figures are the CPU and wall time of the ``prune`` call (imports
and building the model are reported apart). ``--compare DIR`` runs another checkout's ``src``
in the same rounds, interleaved, so a burst of load hits both alike. Goal: <= 30 s of CPU.

    python benchmarks/refusal.py --out benchmarks/results/refusal.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

GOAL_CPU_S = 30.0
ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
start = time.process_time()
import torch, torchvision, energyprune
from energyprune.errors import ConfigError
torch.manual_seed(0)
model, x = torchvision.models.swin_t().eval(), torch.randn(1, 3, 224, 224)
cpu, wall, error = time.process_time(), time.perf_counter(), None
try:
    energyprune.prune(model, x, target_energy=float(sys.argv[1]))
except ConfigError as e:
    error = str(e)
print(json.dumps({
    "prune_cpu_s": time.process_time() - cpu,
    "prune_wall_s": time.perf_counter() - wall,
    "setup_cpu_s": cpu - start,
    "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "error": error,
}))
"""


def _commit(checkout: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+dirty" if dirty else "")


def _once(checkout: Path, target: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(target)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout} exited {done.returncode}: {done.stderr[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--compare", type=Path, help="another checkout, run in the same rounds")
    parser.add_argument("--out", default="benchmarks/results/refusal.json")
    args = parser.parse_args(argv)
    checkouts = {"this checkout": ROOT} | ({"compared": args.compare} if args.compare else {})
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for _ in range(args.repeats):
        for name, checkout in checkouts.items():
            runs[name].append(_once(checkout.resolve(), args.target))
    cases = {}
    for name, checkout in checkouts.items():
        cpu = statistics.median(r["prune_cpu_s"] for r in runs[name])
        wall = statistics.median(r["prune_wall_s"] for r in runs[name])
        refused = all(r["error"] for r in runs[name])
        cases[name] = {
            "checkout": str(checkout),
            "commit": _commit(checkout),
            "runs": runs[name],
            "median_prune_cpu_s": cpu,
            "median_prune_wall_s": wall,
            "refused": refused,
            "meets_goal": refused and cpu <= GOAL_CPU_S,
        }
    result = {
        **provenance(__file__, argv),
        "load_average_1min_at_start": load,
        "load_average_1min_at_end": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "goal_cpu_s": GOAL_CPU_S,
        "target_energy": args.target,
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, c in cases.items():
        print(
            f"{name} ({c['commit']}): CPU {c['median_prune_cpu_s']:.1f} s, wall "
            f"{c['median_prune_wall_s']:.1f} s, refused {c['refused']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
