"""What the ``jetson-tx2`` profile keeps and cuts, against ``horowitz-45nm``: MobileNet-V2 and
ResNet-18 at batch 1, each pruned to half its estimated energy by the CLI's one cut.

    python benchmarks/prune_tx2.py --out benchmarks/results/prune_tx2.json

Each arm runs ``energyprune prune MODEL --hardware HW --target-energy 0.5 --out DIR`` (the
energy criterion, no data, no fine-tuning: the cut a profile asks for, not a recovered model)
and reads its plan.json and profiles. Widths are given per stage: the trunk (the channels the
residual adds share) and the inner widths of each block. Energy is estimated, split into
compute, memory, launches and time-driven (static + active) energy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

MODELS = ("mobilenet_v2", "resnet18")
PROFILES = ("jetson-tx2", "horowitz-45nm")
#: torchvision MobileNet-V2's inverted-residual stages: (name, first block, last block)
MBV2 = (("16", 1, 1), ("24", 2, 3), ("32", 4, 6), ("64", 7, 10), ("96", 11, 13),
        ("160", 14, 16), ("320", 17, 17))  # fmt: skip


def _mbv2(widths: dict) -> list[dict]:
    stages = [{"stage": "stem", "trunk": widths["features.0.0"][1], "inner": []}]
    for name, first, last in MBV2:
        blocks = range(first, last + 1)
        trunk = widths[f"features.{last}.conv.{1 if last == 1 else 2}"][1]
        inner = [widths[f"features.{b}.conv.0.0"][1] for b in blocks if b > 1]
        stages.append({"stage": name, "trunk": trunk, "inner": inner})
    stages.append({"stage": "head", "trunk": widths["features.18.0"][1], "inner": []})
    return stages


def _resnet18(widths: dict) -> list[dict]:
    stages = [{"stage": "stem", "trunk": widths["conv1"][1], "inner": []}]
    for i in range(1, 5):
        stages.append({"stage": f"layer{i}", "trunk": widths[f"layer{i}.1.conv2"][1],
                       "inner": [widths[f"layer{i}.{b}.conv1"][1] for b in (0, 1)]})  # fmt: skip
    return stages


STAGES = {"mobilenet_v2": _mbv2, "resnet18": _resnet18}


def _totals(profile: dict) -> dict:
    t = profile["total"]
    keys = ("energy_j", "compute_j", "memory_j", "overhead_j", "static_j", "seconds", "macs")
    return {k: t.get(k, 0.0) for k in keys}  # an untimed profile prices no time


def _arm(model: str, hw: str, tmp: Path) -> dict:
    out = tmp / f"{model}-{hw}"
    command = ["energyprune", "prune", model, "--hardware", hw, "--target-energy", "0.5",
               "--out", str(out)]  # fmt: skip
    exe = Path(sys.executable).with_name("energyprune")
    subprocess.run([str(exe), *command[1:]], check=True, capture_output=True, text=True)
    plan = json.loads((out / "plan.json").read_text())
    before = json.loads((out / "profile_before.json").read_text())
    after = json.loads((out / "profile_after.json").read_text())
    dense = {k: [v[0], v[1]] for k, v in _dense_widths(model).items()}
    return {"command": " ".join([*command[:-1], "DIR"]), "before": _totals(before),
            "after": _totals(after), "dense_stages": STAGES[model](dense),
            "pruned_stages": STAGES[model](plan["widths"])}  # fmt: skip


def _dense_widths(model: str) -> dict:
    from torch import nn

    from energyprune.models.zoo import build_model

    built = build_model(model).model
    return {n: (m.in_channels, m.out_channels) for n, m in built.named_modules()
            if isinstance(m, nn.Conv2d)}  # fmt: skip


def _markdown(results: dict) -> str:
    lines = []
    for model in MODELS:
        lines.append(f"\n{model}: trunk / inner widths per stage (dense → pruned)\n")
        arms = results[model]
        lines.append("| stage | dense | " + " | ".join(PROFILES) + " |")
        lines.append("|---" * (2 + len(PROFILES)) + "|")
        dense = arms[PROFILES[0]]["dense_stages"]
        for i, stage in enumerate(dense):
            cells = [f"{a['pruned_stages'][i]['trunk']} / {a['pruned_stages'][i]['inner']}"
                     for a in (arms[p] for p in PROFILES)]  # fmt: skip
            lines.append(f"| {stage['stage']} | {stage['trunk']} / {stage['inner']} | "
                         + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = {m: {hw: _arm(m, hw, Path(tmp)) for hw in PROFILES} for m in MODELS}
    out = {**provenance(__file__, argv), "target_energy": 0.5, "batch": 1, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for model, arms in results.items():
        for hw, arm in arms.items():
            b, a = arm["before"], arm["after"]
            share = [x["static_j"] / x["energy_j"] for x in (b, a)]
            print(f"{model:13s} {hw:14s} {1e3 * b['energy_j']:7.1f} -> {1e3 * a['energy_j']:6.1f}"
                  f" mJ, time-driven {share[0]:.0%} -> {share[1]:.0%}, "
                  f"MACs x{a['macs'] / b['macs']:.3f}")  # fmt: skip
    print(_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
