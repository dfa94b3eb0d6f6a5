"""Prune SmolLM2-135M to 0.7 of its estimated decode J/token, every arm with the same recovery.

The real model (``make llm``: SmolLM2-135M-Instruct, dequantised from a 4-bit GGUF to fp32, a
real but slightly noisy checkpoint), calibrated and distilled on WikiText-2 validation text,
perplexity on the first ``--eval-windows`` windows of WikiText-2 test (the same windows for
every arm). Energy is ESTIMATED: J per generated token, decode at batch 1 with 1,024 tokens of
context on ``h100-sxm``, and for the sparse arms also on ``h100-sxm-2of4`` (a runtime with 2:4
kernels). Decode speed is MEASURED on this CPU (greedy, batch 1): latency, not energy.

    python benchmarks/llm_prune.py --finetune-steps 100 --out benchmarks/results/llm_prune.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wikitext-2"
ARMS = ("dense", "wanda-50", "wanda-2:4", "depth", "width", "energy", "torch-pruning")


@torch.no_grad()
def tokens_per_s(model, prompt: torch.Tensor, new: int = 32, repeats: int = 3) -> float:
    """Greedy decode speed at batch 1 on this CPU (median of ``repeats``): latency only."""
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        speeds.append(new / (time.perf_counter() - start))
    return statistics.median(speeds)


def _dense_row(model, data, prompt, windows: int) -> dict:
    from energyprune.pipeline.text import perplexity

    ppl = perplexity(model, data.eval, limit=windows).value
    return {
        "energy_ratio": 1.0,
        "energy_ratio_2of4": 1.0,
        "ppl_after_cut": ppl,
        "ppl_after_recovery": ppl,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": tokens_per_s(model, prompt),
        "plan": {},
    }


def _arm_row(result, regime, prompt, dense_2of4: float) -> dict:
    from energyprune.energy.lm.per_token import profile_lm

    return {
        "energy_ratio": result.energy_ratio,
        "energy_ratio_2of4": profile_lm(result.model, regime, "h100-sxm-2of4").energy_j
        / dense_2of4,
        "ppl_after_cut": result.ppl_cut.value,
        "ppl_after_recovery": result.ppl_recovered.value,
        "params": result.params_pruned,
        "tokens_per_s": tokens_per_s(result.model, prompt),
        "plan": result.plan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--eval-windows", type=int, default=20)
    parser.add_argument("--calib-windows", type=int, default=16)
    parser.add_argument("--target-energy", type=float, default=0.7)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", default="benchmarks/results/llm_prune.json")
    args = parser.parse_args(argv)
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import Decode
    from energyprune.models.lms import load_builtin_lm
    from energyprune.pipeline.lm_prune import LMHooks, LMPruneConfig, prune_lm
    from energyprune.pipeline.text import load_text

    torch.manual_seed(0)
    lm = load_builtin_lm("smollm2-135m")
    data = load_text(f"text:{SHARED / 'wiki.valid.tokens'},{SHARED / 'wiki.test.raw'}",
                     lm.tokenizer, 512)  # fmt: skip
    regime = Decode(1, 1024)
    prompt = data.eval[0, :16].unsqueeze(0)
    dense_j = {
        hw: profile_lm(lm.model, regime, hw).energy_j for hw in ("h100-sxm", "h100-sxm-2of4")
    }
    arms = []
    for arm in args.arms.split(","):
        start = time.perf_counter()
        if arm == "dense":
            row = _dense_row(lm.model, data, prompt, args.eval_windows)
        else:
            cfg = LMPruneConfig(
                target_energy=args.target_energy,
                hardware="h100-sxm",
                finetune_steps=args.finetune_steps,
                method=arm,
                calib_windows=args.calib_windows,
                eval_windows=args.eval_windows,
            )
            hooks = LMHooks(log=lambda line: print(line, flush=True))
            result = prune_lm(lm.model, data, regime, cfg, hooks=hooks)
            row = _arm_row(result, regime, prompt, dense_j["h100-sxm-2of4"])
        row = {"arm": arm, **row, "wall_s": time.perf_counter() - start}
        arms.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            **provenance(__file__, argv), "model": lm.note, "estimated_energy": True,
            "regime": regime.to_dict(), "hardware": "h100-sxm",
            "dense_j_per_token": dense_j, "eval_windows": args.eval_windows, "seq_len": 512,
            "finetune_steps": args.finetune_steps, "arms": arms}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
