"""How far a change to the energy model moved the dense estimates: every torchvision model of
the zoo benchmark (≤ 12 GFLOPs, random weights, 1×3×224×224) plus three Hugging Face
transformers built from configs (BERT, LLaMA, ViT), priced by two checkouts of energyprune.

    python benchmarks/estimate_shift.py --old-src /path/to/old/checkout/src \\
        --out benchmarks/results/estimate_shift.json

Each checkout runs in its own child process (``PYTHONPATH`` = its ``src``), traces each model
once under ``torch.no_grad()`` and prices the trace under ``horowitz-45nm``, ``gpu-generic``
and the profile fitted by ``benchmarks/calibrate_table.py`` (gpu-generic base, seed 0: channel
multiple 8 with a fitted unaligned-MAC cost, so alignment counts; a latency stand-in, its
"joules" are seconds-like). All are estimates; nothing here is measured. The JSON lists every
model; ``--table`` prints the ones that moved by more than 1 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance

#: built-in profiles, and a fitted one whose unaligned-MAC coefficient is not zero (the built-ins
#: charge nothing for misalignment, so only a calibrated profile shows the depthwise change)
FITTED = str(
    Path(__file__).resolve().parent / "results" / "calibrate_table" / "gpu-generic-seed0.yaml"
)
PROFILES = ("horowitz-45nm", "gpu-generic", "eyeriss-65nm", "h100-sxm", "h100-sxm-2of4", "a100-sxm",
            FITTED)  # fmt: skip
#: public LLM configs priced per token (decode, batch 8, 1,024 tokens of context) on GPU profiles
LLM_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "measurements" / "llm-configs"
LLM_PROFILES = ("h100-sxm", "a100-sxm")
HF = ("bert", "llama", "vit")
MOVED = 0.01


def _hf_model(name: str):
    import torch
    import transformers as tf

    if name == "bert":
        cfg = tf.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=1024)  # fmt: skip
        return tf.BertModel(cfg), {"input_ids": torch.randint(0, 1000, (1, 128))}
    if name == "llama":
        sizes = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4}
        cfg = tf.LlamaConfig(**sizes, num_attention_heads=8, num_key_value_heads=2, vocab_size=1000)
        return tf.LlamaModel(cfg), {"input_ids": torch.randint(0, 1000, (1, 128))}
    cfg = tf.ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                       intermediate_size=768, image_size=224, patch_size=16)  # fmt: skip
    return tf.ViTModel(cfg), {"pixel_values": torch.randn(1, 3, 224, 224)}


def _models(max_gflops: float) -> list[str]:
    import torchvision
    from torchvision.models import get_model_weights, list_models

    names = list_models(module=torchvision.models)
    zoo = [n for n in names if get_model_weights(n).DEFAULT.meta.get("_ops", 1e9) <= max_gflops]
    return zoo + [f"hf:{n}" for n in HF]


def child(max_gflops: float) -> int:
    """In the checkout under test: {model: {profile: joules}} on stdout."""
    import warnings

    import torch
    import torchvision

    from energyprune import estimate, load_hardware, trace  # public: any checkout has them

    warnings.filterwarnings("ignore")
    out = {}
    for name in _models(max_gflops):
        torch.manual_seed(0)
        if name.startswith("hf:"):
            model, x = _hf_model(name[3:])
        else:
            model, x = getattr(torchvision.models, name)(), torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            tr = trace(model.eval(), x)
        out[name] = {p: estimate(tr, load_hardware(p)).total.energy_j for p in PROFILES}
        print(name, file=sys.stderr, flush=True)
    out.update(_llm_configs())
    print(json.dumps(out))
    return 0


def _llm_configs() -> dict[str, dict[str, float]]:
    """J/token of every shared LLM config in decode (batch 8, context 1,024), per GPU profile."""
    from energyprune import Decode, profile_lm

    out = {}
    for config in sorted(LLM_CONFIGS.glob("*.json")):
        regime = Decode(8, 1024)
        out[f"llm:{config.stem}"] = {
            p: profile_lm(f"hf:{config}", regime, p).energy_j for p in LLM_PROFILES
        }
        print(config.stem, file=sys.stderr, flush=True)
    return out


def _run(src: str, max_gflops: float) -> dict:
    env = {**os.environ, "PYTHONPATH": src}
    cmd = [sys.executable, __file__, "--child", "--max-gflops", str(max_gflops)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
    """Markdown: the models whose estimate moved by more than 1 % under either profile."""
    lines = ["| model | profile | before (µJ) | after (µJ) | change |", "|---|---|---|---|---|"]
    for name, row in result["models"].items():
        for p in row["new"]:
            old, new = row["old"][p], row["new"][p]
            if abs(new / old - 1) > MOVED:
                label = "fitted (calibrate_table, gpu-generic seed 0)" if p == FITTED else p
                lines.append(f"| {name} | {label} | {old * 1e6:.1f} | {new * 1e6:.1f} | "
                             f"{100 * (new / old - 1):+.1f} % |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-src", help="the src/ folder of the checkout to compare against")
    parser.add_argument("--max-gflops", type=float, default=12.0)
    parser.add_argument("--out", default="benchmarks/results/estimate_shift.json")
    parser.add_argument("--table", metavar="JSON", help="print the table of a finished run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.max_gflops)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if not args.old_src:
        parser.error("--old-src is required (the src/ of the checkout to compare against)")
    new_src = str(Path(__file__).resolve().parents[1] / "src")
    made = provenance(__file__, argv)  # the commit as the run starts
    old, new = _run(args.old_src, args.max_gflops), _run(new_src, args.max_gflops)
    result = {
        **made,
        "old_src": args.old_src,
        "profiles": list(PROFILES),
        "basis": "estimated (no meter): dense models, random weights, 1x3x224x224 / 128 tokens",
        "models": {n: {"old": old[n], "new": new[n]} for n in new if n in old},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
