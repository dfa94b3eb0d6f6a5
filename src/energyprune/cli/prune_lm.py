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
    g.add_argument(
        "--probe-windows",
        type=int,
        default=2,
        help="windows each loss probe of the energy and width methods is scored on (2)",
    )


def is_lm_request(args: argparse.Namespace) -> bool:
    from energyprune.models.lms import BUILTIN_LMS

    return args.model in BUILTIN_LMS or (args.data or "").startswith("text:")


def _config(args: argparse.Namespace):
    from energyprune.pipeline.lm_prune import LMPruneConfig

    if args.max_joules is not None:
        raise ConfigError("language models are priced per token: use --max-joules-per-token J "
                          "or --target-energy F (a fraction of dense)")  # fmt: skip
    if args.data is None or not args.data.startswith("text:"):
        raise ConfigError("pruning a language model needs --data text:TRAIN[,EVAL]")
    for flag, value in (
        ("--eval-windows", args.eval_windows),
        ("--calib-windows", args.calib_windows),
        ("--probe-windows", args.probe_windows),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    budget = {"target_energy": args.target_energy} if args.target_energy is not None else {
        "max_joules_per_token": args.max_joules_per_token}  # fmt: skip
    return LMPruneConfig(**budget, hardware=args.hardware, probe_windows=args.probe_windows,
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
                          on_step=lambda i, n, loss: batch(0, i - 1, n, loss),
                          on_probe=lambda i, n: bar.on_items(i, n, "loss probes"))  # fmt: skip
    _write(out, result, loaded, regime, cfg, console)
    return 0 if result.guardrail_ok else 1


def _write(out: Path, result, loaded, regime, cfg, console: Console) -> None:
    from energyprune.pruning.lm_export import save_lm
    from energyprune.reports.lm import lm_prune_markdown

    report = {"model": loaded.name, "weights": loaded.note, "regime": regime.to_dict(),
              "hardware": cfg.hardware, **result.to_dict()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    why_not = save_lm(result.model, out / "model", loaded.tokenizer)
    report["from_pretrained"] = "yes" if why_not is None else f"no: {why_not}"
    if why_not:
        console.print(f"[yellow]note:[/] {out / 'model'} is not from_pretrained-loadable: "
                      f"{why_not}")  # fmt: skip
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", lm_prune_markdown(report))
    console.print(result.guardrail)
    plan = ", plan.json" if why_not else ""
    console.print(f"wrote {out}/model/ (config.json, model.safetensors{plan}, tokenizer), "
                  "report.json, report.md")  # fmt: skip
