"""Re-measure CPU decode speed of every arm of ``llm_prune.json`` on an idle machine.

    python benchmarks/llm_prune_speed.py --from benchmarks/results/llm_prune.json \
        --out benchmarks/results/llm_prune_speed.json

Speed depends on shapes, not on which channels were kept: each arm's shape is rebuilt from the
dense model and its recorded plan (layers dropped, MLP chunks and query heads cut), and greedy
batch-1 decode is timed (32 tokens, median of 5). Sparse arms keep dense shapes and run on dense
kernels, so they are timed as dense. Latency on this CPU, not energy.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_prune import SHARED, tokens_per_s
from provenance import provenance


def _shaped(dense, plan: dict):
    """A copy of ``dense`` with the plan's shapes (channels chosen by magnitude)."""
    from energyprune.pruning.lm_allocate import LMPlan, apply_plan, magnitude_scores

    def ints(d):
        return {int(k): int(v) for k, v in (d or {}).items()}

    model = copy.deepcopy(dense)
    cut = LMPlan(ints(plan.get("mlp_chunks_cut")), ints(plan.get("query_heads_per_group_cut")),
                 list(plan.get("drop_layers") or []))  # fmt: skip
    apply_plan(model, cut, magnitude_scores(model))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", default="benchmarks/results/llm_prune.json")
    parser.add_argument("--out", default="benchmarks/results/llm_prune_speed.json")
    args = parser.parse_args(argv)
    from energyprune.models.lms import load_builtin_lm
    from energyprune.pipeline.text import load_text

    torch.manual_seed(0)
    runs = json.loads(Path(args.source).read_text())
    lm = load_builtin_lm("smollm2-135m")
    data = load_text(f"text:{SHARED / 'wiki.valid.tokens'},{SHARED / 'wiki.test.raw'}",
                     lm.tokenizer, 512)  # fmt: skip
    prompt = data.eval[0, :16].unsqueeze(0)
    rows = []
    for arm in runs["arms"]:
        model = _shaped(lm.model, arm["plan"]).eval()
        speed = tokens_per_s(model, prompt, repeats=5)
        rows.append({"arm": arm["arm"], "params": sum(p.numel() for p in model.parameters()),
                     "tokens_per_s": speed})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps({**provenance(__file__, argv), "from": args.source,
                                          "arms": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
