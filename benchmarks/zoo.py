"""Every torchvision classification model up to a FLOPs cap, pruned to ½ estimated energy by
energyprune and by Torch-Pruning's default pruner (issue 12).

    python benchmarks/zoo.py --out benchmarks/results/zoo.json [--max-gflops 12] [--limit-s 150]
    python benchmarks/zoo.py --table benchmarks/results/zoo.json  # into docs/benchmarks.md

Each (model, tool) runs in its own child process with a time limit and random weights (no
download). Per run: ok or the error's first line, seconds (prune only, model construction
excluded), estimated energy / dense under `horowitz-45nm` (priced under `torch.no_grad()`, as
deployed and as `prune` prices), and whether the output shape is kept.

Torch-Pruning's default is its `MetaPruner` with group L2 magnitude, one `step()` at a channel
ratio of 0.3 (≈ ½ MACs), the classifier ignored. energyprune runs `prune(model, x, 0.5)`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import get_model_weights, list_models

from energyprune.energy.pricing.estimates import profile
from energyprune.files import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

TOOLS = ("energyprune", "torch-pruning")


def _classifier(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]


def _prune(tool: str, model: nn.Module, x: torch.Tensor) -> nn.Module:
    if tool == "energyprune":
        from energyprune.pruning.apply import prune

        return prune(model, x, 0.5).model
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.3,
        ignored_layers=[_classifier(model)],
    )
    pruner.step()
    return model


def run_one(name: str, tool: str, size: int) -> dict:
    """One model through one tool, in this process."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():  # priced as deployed (inference kernels), as prune prices
        dense_j = profile(model, x).total.energy_j
        shape = tuple(model(x).shape)
    start = time.perf_counter()
    pruned = _prune(tool, model, x)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        kept = tuple(pruned.eval()(x).shape) == shape
        ratio = profile(pruned, x).total.energy_j / dense_j
    return {"ok": True, "seconds": seconds, "energy_fraction": ratio, "shape_kept": kept}


def in_child(name: str, tool: str, size: int, limit_s: float) -> dict:
    cmd = [sys.executable, __file__, "--one", name, "--tool", tool, "--size", str(size)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"over the {limit_s:g} s limit"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = [ln for ln in proc.stderr.strip().splitlines() if ln and not ln.startswith(" ")]
    return {"ok": False, "error": (err[-1] if err else f"exit {proc.returncode}")[:200]}


def models(max_gflops: float) -> list[str]:
    names = list_models(module=torchvision.models)
    return [n for n in names if get_model_weights(n).DEFAULT.meta.get("_ops", 1e9) <= max_gflops]


def _summary(rows: list[dict]) -> dict:
    ours = {r["model"]: r for r in rows if r["tool"] == "energyprune"}
    theirs = {r["model"]: r for r in rows if r["tool"] == "torch-pruning"}
    both = [m for m in ours if ours[m]["ok"] and theirs.get(m, {}).get("ok")]
    ratios = [ours[m]["seconds"] / theirs[m]["seconds"] for m in both]
    return {
        "models": len(ours),
        "energyprune_ok": sum(r["ok"] for r in ours.values()),
        "torch_pruning_ok": sum(r["ok"] for r in theirs.values()),
        "tp_ok_but_ours_failed": [m for m in theirs if theirs[m]["ok"] and not ours[m]["ok"]],
        "median_time_ratio": statistics.median(ratios) if ratios else None,
        "over_0505": [m for m, r in ours.items() if r["ok"] and r["energy_fraction"] > 0.505],
        "shape_changed": [m for m, r in ours.items() if r["ok"] and not r["shape_kept"]],
    }


DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"


def _cell(row: dict | None) -> str:
    if row is None:
        return "not run"
    if not row["ok"]:
        return "error: " + row["error"].replace("|", "/")[:80]
    shape = "" if row["shape_kept"] else ", **shape changed**"
    return f"{row['seconds']:.1f} s, {row['energy_fraction']:.3f}{shape}"


def table(result: dict) -> str:
    """The zoo table in Markdown: per model, each tool's seconds and estimated energy / dense."""
    rows = result["rows"]
    by = {(r["model"], r["tool"]): r for r in rows}
    lines = [
        "| model | energyprune (s, est. energy / dense) | Torch-Pruning | time ratio |",
        "|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        ours, theirs = by.get((model, TOOLS[0])), by.get((model, TOOLS[1]))
        both = ours and theirs and ours["ok"] and theirs["ok"]
        ratio = f"{ours['seconds'] / theirs['seconds']:.1f}×" if both else "—"
        lines.append(f"| {model} | {_cell(ours)} | {_cell(theirs)} | {ratio} |")
    s = _summary(rows)
    median = s["median_time_ratio"]
    lines += [
        "",
        f"Models: {s['models']}; energyprune ok {s['energyprune_ok']}, Torch-Pruning ok "
        f"{s['torch_pruning_ok']}; Torch-Pruning ok but energyprune failed: "
        f"{', '.join(s['tp_ok_but_ours_failed']) or 'none'}; median time ratio "
        f"{'—' if median is None else f'{median:.2f}×'}; over 0.505 of dense: "
        f"{', '.join(s['over_0505']) or 'none'}; output shape changed: "
        f"{', '.join(s['shape_changed']) or 'none'}.",
    ]
    return "\n".join(lines)


def write_table(result_path: Path, doc: Path = DOC) -> None:
    """Replace the text between the zoo markers of docs/benchmarks.md with the table."""
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc} has no {START} ... {END} markers; add them where the table goes")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    body = table(json.loads(result_path.read_text()))
    atomic_write_text(doc, f"{head}{START}\n{body}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gflops", type=float, default=12.0)
    parser.add_argument("--limit-s", type=float, default=150.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default="", help="comma-separated subset")
    parser.add_argument("--out", default="benchmarks/results/zoo.json")
    parser.add_argument("--table", type=Path, help="write the table of this result JSON into docs")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tool", choices=TOOLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.tool, args.size)))
        return 0
    if args.table:
        write_table(args.table)
        return 0
    names = args.models.split(",") if args.models else models(args.max_gflops)
    rows: list[dict] = []
    meta = {
        **provenance(__file__, argv),
        "input": [1, 3, args.size, args.size],
        "hardware_profile": "horowitz-45nm (estimated energy)",
    }
    for i, name in enumerate(names, 1):
        for tool in TOOLS:
            row = {"model": name, "tool": tool, **in_child(name, tool, args.size, args.limit_s)}
            rows.append(row)
            print(f"[{i}/{len(names)}] {name} {tool}: {row}", flush=True)
        result = {**meta, "rows": rows, "summary": _summary(rows)}
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(_summary(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
