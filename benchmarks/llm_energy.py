"""Estimated energy per token and decode step time of public LLM configs on the shipped
h100-sxm profile (calibrated to measured H100 vLLM runs of the Qwen3 family).

Every figure is an ESTIMATE, never a measurement: the profile, its calibration and the regime
are named in the JSON. Models served on several GPUs are priced tensor-parallel
(``profile_lm(..., tensor_parallel=G)``), J per token summed over the GPUs. The implied power
per GPU (J per token / seconds per token / G) must lie between the board's idle power and its
TDP. Each model runs in a fresh process, so its peak memory is its own; wall time is per
regime (tracing and pricing, the process's imports excluded). The configs in
benchmarks/configs/ hold public dimensions (benchmarks/configs/SOURCES.md).

    python benchmarks/llm_energy.py --out benchmarks/results/llm_energy.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

CONFIGS = Path(__file__).resolve().parent / "configs"
#: model → (config file, GPUs it is served on, tensor-parallel)
MODELS = {
    "Llama-3.1-8B": ("llama-3.1-8b.json", 1),
    "Llama-3.1-70B": ("llama-3.1-70b.json", 4),
    "Qwen3-8B": ("qwen3-8b.json", 1),
    "Qwen3-14B": ("qwen3-14b.json", 1),
    "Mistral-7B-v0.3": ("mistral-7b-v0.3.json", 1),
    "Mixtral-8x7B": ("mixtral-8x7b.json", 1),
    "SmolLM2-135M": ("smollm2-135m.json", 1),
    "Llama-3.2-1B": ("llama-3.2-1b.json", 1),
}
REGIMES = {
    "decode b1": ("decode", 1, 1024),
    "decode b8": ("decode", 8, 1024),
    "decode b64": ("decode", 64, 1024),
    "decode b512": ("decode", 512, 1024),
    "prefill 1024": ("prefill", 1, 1024),
}
#: ML.ENERGY leaderboard readings quoted in issue 25 (measured, J per output token).
MLENERGY = {("Llama-3.1-8B", "decode b8"): 0.46, ("Llama-3.1-8B", "decode b512"): 0.07}


def _one(model: str, hardware: str) -> dict:
    """Every regime of one model, in this process (run as a child)."""
    from energyprune.energy.hardware.profile import load_hardware
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import Decode, Prefill

    file, gpus = MODELS[model]
    hw = load_hardware(hardware)
    rows = {}
    for name, (phase, batch, length) in REGIMES.items():
        regime = Decode(batch, length) if phase == "decode" else Prefill(batch, length)
        start = time.perf_counter()
        lm = profile_lm(f"hf:{CONFIGS / file}", regime, hw, tensor_parallel=gpus)
        rows[name] = {
            "j_per_token": lm.energy_j,
            "s_per_token": lm.seconds,
            "step_ms": lm.seconds * regime.tokens * 1e3,
            "power_per_gpu_w": lm.energy_j / lm.seconds / gpus,
            "static_share": lm.total("static_j") / lm.energy_j,
            "wall_s": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    return {
        "gpus": gpus,
        "config": f"benchmarks/configs/{file}",
        "runtime": lm.runtime,
        "calibration": lm.calibration,
        "power_w": {"idle": hw.power.idle_w, "max": hw.power.max_w},
        "regimes": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="h100-sxm")
    parser.add_argument("--out", default="benchmarks/results/llm_energy.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args.child, args.hardware)))
        return 0
    models = {}
    for model in MODELS:
        done = subprocess.run(
            [sys.executable, __file__, "--child", model, "--hardware", args.hardware],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        models[model] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{model}: done", file=sys.stderr)
    result = {**provenance(__file__, argv), "hardware": args.hardware, "estimated": True,
              "models": models,
              "mlenergy_measured": {f"{m} / {r}": j for (m, r), j in MLENERGY.items()}}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(_markdown(models))
    return 0


def _markdown(models: dict) -> str:
    head = (
        "| model (GPUs) | " + " | ".join(REGIMES) + " | W per GPU | slowest regime, peak memory |"
    )
    lines = [head, "|" + "---|" * (len(REGIMES) + 3)]
    for model, data in models.items():
        cells = []
        for name in REGIMES:
            row = data["regimes"][name]
            cell = f"{row['j_per_token']:.4g} J, {row['step_ms']:.3g} ms"
            if (model, name) in MLENERGY:
                cell += f" (ML.ENERGY {MLENERGY[model, name]} J)"
            cells.append(cell)
        watts = [r["power_per_gpu_w"] for r in data["regimes"].values()]
        slowest = max(r["wall_s"] for r in data["regimes"].values())
        peak = max(r["peak_rss_mb"] for r in data["regimes"].values())
        label = f"{model} ({data['gpus']})"
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {min(watts):.0f}-{max(watts):.0f} | "
            f"{slowest:.1f} s, {peak:.0f} MB |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
