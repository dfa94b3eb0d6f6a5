"""Calibrate h100-sxm to the 70 measured H100 vLLM runs of the Qwen3 family (ML.ENERGY v3),
every model held out in turn, and write the shipped profile and its report.

The ML.ENERGY table (``../shared/measurements/mlenergy-h100-qwen3.csv``, Apache-2.0; how it
was measured: the README beside it) becomes a per-token table: one ``workload`` row per run,
batch = the run's mean batch (a multiple of the GPUs under expert parallelism), output = its
mean output tokens, J per output token and median inter-token latency as measured, split as
it was run. Prompt lengths are not published; the prompt each task is priced with is an
assumption stated here, fixed before any fit (PROMPT).

    python benchmarks/calibrate_h100_llm.py \
        --out src/energyprune/energy/hardware/profiles/h100-sxm.yaml \
        --report benchmarks/results/calibrate_h100_llm.json
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT.parent / "shared" / "measurements" / "mlenergy-h100-qwen3.csv"
#: prompt tokens per task (not published): lm-arena-chat turns run to hundreds or a few
#: thousand tokens; gpqa prompts are one multiple-choice question with its instructions
PROMPT = {"lm-arena-chat": 1024, "gpqa": 512}
DEVICE = "NVIDIA H100 80GB HBM3 (ML.ENERGY v3, vLLM 0.11.1, NVML via Zeus)"
FIELDS = ["model", "phase", "batch", "prompt", "output", "gpus", "tensor_parallel",
          "expert_parallel", "dtype", "joules_per_token", "itl_ms", "device", "source"]  # fmt: skip


def token_table(measured: Path, out: Path) -> int:
    """Write the per-token table of the ML.ENERGY runs; returns the number of rows."""
    configs = measured.parent / "llm-configs"
    rows = []
    with measured.open() as f:
        for r in csv.DictReader(f):
            gpus, ep = int(r["gpus"]), int(r["expert_parallel"])
            batch = max(ep, round(float(r["avg_batch_size"]) / ep) * ep)
            rows.append(
                {
                    "model": f"hf:{os.path.relpath(configs / r['config'], out.parent)}",
                    "phase": "workload",
                    "batch": batch,
                    "prompt": PROMPT[r["task"]],
                    "output": round(float(r["avg_output_tokens"])),
                    "gpus": gpus,
                    "tensor_parallel": int(r["tensor_parallel"]),
                    "expert_parallel": ep,
                    "dtype": "bf16",
                    "joules_per_token": r["energy_per_output_token_j"],
                    "itl_ms": r["median_itl_ms"],
                    "device": DEVICE,
                    "source": f"ml-energy/leaderboard@{r['source_commit'][:7]} {r['task']}",
                }
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", default=str(MEASURED))
    parser.add_argument("--table", default="benchmarks/results/mlenergy-h100-qwen3-tokens.csv")
    parser.add_argument("--out", default="benchmarks/results/h100-sxm-calibrated.yaml")
    parser.add_argument("--report", default="benchmarks/results/calibrate_h100_llm.json")
    args = parser.parse_args(argv)
    from energyprune.energy.calibration.per_token import calibrate_lm_from
    from energyprune.energy.calibration.profile_file import write_calibration

    n = token_table(Path(args.measured), Path(args.table))
    start = time.perf_counter()
    result = calibrate_lm_from(
        args.table,
        base="h100-sxm-datasheet",
        split="each",
        name="h100-sxm",
        progress=lambda done, total, model: print(f"{done}/{total} {Path(model).name}", end="\r"),
    )
    result.report.update(
        provenance(__file__, argv),
        table=f"{Path(args.measured).name} ({n} runs) as {args.table}",
        prompt_assumption=PROMPT,
        wall_s=time.perf_counter() - start,
    )
    write_calibration(result, args.out, args.report)
    rep = result.report
    print(f"\nheld out in turn: J/token MAPE {rep['mape']:.1%}, ITL MAPE {rep['itl_mape']:.1%}, "
          f"Spearman {rep['spearman']:.3f} (base {rep['base_mape']:.1%}, "
          f"baseline {rep['baseline_mape']:.1%})")  # fmt: skip
    for model, e in rep["by_model"].items():
        print(f"  {model}: J/token {e['mape']:.1%}, ITL {e['itl_mape']:.1%} ({e['n_rows']} rows)")
    print(f"wrote {args.out} and {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
