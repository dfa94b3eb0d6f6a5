"""`energyprune prune` for a language model: a built-in LM (``smollm2-135m``) or
``--data text:...``, pruned to a J/token budget in ``--regime``, recovered by distillation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text, check_writable

__all__ = ["add_lm_args", "is_lm_request", "run_lm_prune"]


def add_lm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("language models (a built-in LM such as smollm2-135m, --data text:)")
    g.add_argument(
        "--regime",
        default="decode:batch=1,context=1024",
        help="the serving regime J/token is priced in: decode:batch=B,context=L, "
        "prefill:batch=B,prompt=S or workload:prompt=S,output=N,batch=B",
    )
    g.add_argument(
        "--lm-method",
        default="energy",
        choices=("energy", "depth", "width", "torch-pruning", "wanda-50", "wanda-2:4"),
        help="energy: heads, MLP channels and layers by importance per J/token (default); "
        "depth / width: one kind only; torch-pruning: uniform width; wanda-*: sparsity",
    )
    g.add_argument("--finetune-steps", type=int, default=200, help="distillation optimiser steps")
    g.add_argument("--max-ppl-rise", type=float, metavar="PCT", help="perplexity guardrail (%%)")
    g.add_argument("--lm-lr", type=float, default=5e-5, help="distillation learning rate")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per text window (512)")
    g.add_argument("--eval-windows", type=int, default=20, help="perplexity windows (20)")
    g.add_argument("--calib-windows", type=int, default=16, help="scoring windows (16)")


def is_lm_request(args: argparse.Namespace) -> bool:
    from energyprune.models.lms import BUILTIN_LMS

    return args.model in BUILTIN_LMS or (args.data or "").startswith("text:")


def _config(args: argparse.Namespace):
    from energyprune.pipeline.lm_prune import LMPruneConfig

    if args.target_energy is None:
        raise ConfigError("language models are pruned to --target-energy F (a fraction of dense)")
    if args.data is None or not args.data.startswith("text:"):
        raise ConfigError("pruning a language model needs --data text:TRAIN[,EVAL]")
    for flag, value in (
        ("--eval-windows", args.eval_windows),
        ("--calib-windows", args.calib_windows),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    return LMPruneConfig(target_energy=args.target_energy, hardware=args.hardware,
                         finetune_steps=args.finetune_steps, max_ppl_rise=args.max_ppl_rise,
                         calib_windows=args.calib_windows, eval_windows=args.eval_windows,
                         lr=args.lm_lr, method=args.lm_method)  # fmt: skip


def _unpaid_sparsity(method: str, kernels: tuple[str, ...]) -> str | None:
    """One line when the asked-for sparsity saves nothing on the profile, else None."""
    if method == "wanda-50":
        return ("--lm-method wanda-50 saves no estimated energy: no runtime has kernels for "
                "unstructured sparsity, so its zeros are priced like any weight")  # fmt: skip
    if method == "wanda-2:4" and "2:4" not in kernels:
        return ("--lm-method wanda-2:4 saves no estimated energy on this profile: it declares no "
                "2:4 kernels (sparse_kernels); try --hardware h100-sxm-2of4")  # fmt: skip
    return None


def run_lm_prune(args: argparse.Namespace, console: Console) -> int:
    from energyprune.cli.progress import Progress, status
    from energyprune.energy.hardware import load_hardware
    from energyprune.energy.regimes import parse_regime
    from energyprune.models.lms import load_builtin_lm
    from energyprune.pipeline.lm_prune import prune_lm
    from energyprune.pipeline.text import load_text

    hw = load_hardware(args.hardware)
    regime, cfg = parse_regime(args.regime), _config(args)
    out = check_writable(args.out)
    unpaid = _unpaid_sparsity(cfg.method, hw.sparse_kernels)
    if unpaid:
        console.print(f"[yellow]note:[/] {unpaid}")
    with status(console, f"loading {args.model}"):
        loaded = load_builtin_lm(args.model)
        data = load_text(args.data, loaded.tokenizer, args.seq_len)
    console.print(f"{loaded.name}: {loaded.note}; {len(data.train)} training and "
                  f"{len(data.eval)} evaluation windows of {data.seq_len} tokens")  # fmt: skip
    with Progress(console, stage="distillation") as bar:
        batch = bar.for_stage("distillation")
        result = prune_lm(loaded.model, data, regime, cfg, log=bar.log,
                          on_step=lambda i, n, loss: batch(0, i - 1, n, loss))  # fmt: skip
    _write(out, result, loaded, regime, cfg, console)
    return 0 if result.guardrail_ok else 1


def _write(out: Path, result, loaded, regime, cfg, console: Console) -> None:
    from energyprune.reports.lm import lm_prune_markdown

    report = {"model": loaded.name, "weights": loaded.note, "regime": regime.to_dict(),
              "hardware": cfg.hardware, **result.to_dict()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    per_layer = getattr(result.model.config, "per_layer_widths", None)
    result.model.save_pretrained(out / "model")  # safetensors; never pickled
    loaded.tokenizer.save_pretrained(out / "model")
    if per_layer:
        report["from_pretrained"] = (
            "no: widths differ per layer "
            f"({', '.join(sorted(per_layer))}), which Llama's config cannot describe"
        )
        console.print(f"[yellow]note:[/] {out / 'model'} is not from_pretrained-loadable: "
                      f"{report['from_pretrained'].removeprefix('no: ')}")  # fmt: skip
    else:
        report["from_pretrained"] = "yes"
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", lm_prune_markdown(report))
    console.print(result.guardrail)
    console.print(f"wrote {out}/model/ (config.json, model.safetensors, tokenizer), report.json, "
                  "report.md")  # fmt: skip
