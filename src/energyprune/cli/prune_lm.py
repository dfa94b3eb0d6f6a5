"""`energyprune prune` for a language model (a built-in LM such as ``smollm2-135m``, or a
Hugging Face folder ``hf:DIR``) with ``--data text:...``: pruned to a J/token budget in
``--regime`` through the one run loop (checkpoints, ``--resume``, seeds, the guardrail)."""

from __future__ import annotations

import argparse

from rich.console import Console

from energyprune.errors import ConfigError
from energyprune.files import check_writable

__all__ = ["LM_METHOD_NAMES", "add_lm_args", "is_lm_request", "run_lm_prune"]

#: the LM cut methods (pipeline.lm_prune.METHODS, whose import this parser must not pay for;
#: tests/test_cli_lm_prune.py ties the two together)
LM_METHOD_NAMES = (
    *("energy", "energy+bits", "depth", "width", "torch-pruning", "wanda-50", "wanda-2:4"),
    *("int8", "int4"),
)


def add_lm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "language models (smollm2-135m, hf:DIR; --data text:TRAIN[,EVAL])",
        "Priced per token in --regime, on h100-sxm unless --hardware says otherwise; "
        "guardrail: perplexity rises at most 10 %% (--max-ppl-rise).",
    )
    g.add_argument(
        "--regime",
        default="decode:batch=1,context=1024",
        help="the serving regime J/token is priced in: decode:batch=B,context=L, "
        "prefill:batch=B,prompt=S or workload:prompt=S,output=N,batch=B",
    )
    g.add_argument(
        "--lm-method",
        default="energy",
        choices=LM_METHOD_NAMES,
        help="energy: heads, MLP channels and layers by importance per J/token (default); "
        "energy+bits: the same with int8 / int4 weights chosen per layer (perplexity on "
        "dequantised weights); depth / width: one kind only; torch-pruning: Torch-Pruning's "
        "LLM recipe (hidden size, MLP and heads at one ratio); wanda-*: sparsity; int8 / int4: "
        "every decoder layer's weights stored so (the format's one point, whatever the target)",
    )
    g.add_argument(
        "--finetune-steps", type=int, help="distillation optimiser steps per pruning step (200)"
    )
    g.add_argument(
        "--max-ppl-rise", type=float, metavar="PCT", help="guardrail: perplexity rise, %% (10)"
    )
    g.add_argument("--lm-lr", type=float, help="deprecated: use --lr")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per text window (512)")
    g.add_argument("--eval-windows", type=int, help="perplexity windows (20)")
    g.add_argument("--calib-windows", type=int, help="scoring windows (16)")
    g.add_argument(
        "--fsdp",
        action="store_true",
        help="shard the model with FSDP2 per decoder layer (the teacher too) under torchrun, "
        "for a model that does not fit one device",
    )
    g.add_argument(
        "--probe-windows",
        type=int,
        help="windows each loss probe of the energy and width methods is scored on (2)",
    )


def is_lm_request(args: argparse.Namespace) -> bool:
    """True when the model (or the data) is a language model's."""
    from energyprune.models.lms import is_lm

    return is_lm(args.model) or (args.data or "").startswith("text:")


def _config(args: argparse.Namespace):
    """The LM options from the command line; unset flags keep LMPruneConfig's defaults."""
    from energyprune.pipeline.lm_prune import LMPruneConfig

    if args.data is None or not args.data.startswith("text:"):
        raise ConfigError("pruning a language model needs --data text:TRAIN[,EVAL]")
    for flag, value in (
        ("--eval-windows", args.eval_windows),
        ("--calib-windows", args.calib_windows),
        ("--probe-windows", args.probe_windows),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    given = {
        "target_energy": args.target_energy,
        "max_joules_per_token": args.max_joules_per_token,
        "finetune_steps": args.finetune_steps,
        "max_ppl_rise": args.max_ppl_rise,
        "calib_windows": args.calib_windows,
        "eval_windows": args.eval_windows,
        "probe_windows": args.probe_windows,
    }
    return LMPruneConfig(
        **{k: v for k, v in given.items() if v is not None},
        hardware=args.hardware,
        lr=args.lr,
        alpha=args.distill_alpha,
        temperature=args.distill_temperature,
        round_to=args.round_to,
        batch_size=args.batch_size,
        method=args.lm_method,
        steps=args.steps,
        seed=args.seed,
    )


def _unpaid_sparsity(method: str, kernels: tuple[str, ...]) -> str | None:
    """One line when the asked-for sparsity saves nothing on the profile, else None."""
    if method == "wanda-50":
        return (
            "--lm-method wanda-50 saves no estimated energy: no runtime has kernels for "
            "unstructured sparsity, so its zeros are priced like any weight"
        )
    if method == "wanda-2:4" and "2:4" not in kernels:
        return (
            "--lm-method wanda-2:4 saves no estimated energy on this profile: it declares no "
            "2:4 kernels (sparse_kernels); try --hardware h100-sxm-2of4"
        )
    return None


def _check_fsdp(args: argparse.Namespace) -> None:
    from energyprune.pipeline.finetune import distributed

    if args.fsdp and not distributed():
        raise ConfigError(
            "--fsdp needs torchrun (WORLD_SIZE > 1): torchrun --nproc-per-node N "
            "-m energyprune.cli prune ..."
        )


def _notes(console: Console, hw, method: str, hardware_given: bool) -> None:
    """The profile a defaulted --hardware chose, and sparsity the profile does not pay for."""
    if not hardware_given:
        console.print(
            f"priced on {hw.name}, the default for language models (--hardware to change)"
        )
    unpaid = _unpaid_sparsity(method, hw.sparse_kernels)
    if unpaid:
        console.print(f"[yellow]note:[/] {unpaid}")


def run_lm_prune(args: argparse.Namespace, console: Console, hardware_given: bool) -> int:
    from energyprune.cli.common import run_with_progress
    from energyprune.cli.progress import status
    from energyprune.energy.hardware.profile import load_hardware
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import parse_regime
    from energyprune.pipeline.lm_kind import DecoderLM
    from energyprune.pipeline.lm_prune import absolute_budget, lm_run_config
    from energyprune.pipeline.text import load_text
    from energyprune.pruning.lm_export import open_lm
    from energyprune.reports.lm import lm_run_lines

    _check_fsdp(args)
    hw = load_hardware(args.hardware)
    regime, cfg = parse_regime(args.regime), _config(args)
    out = check_writable(args.out)
    _notes(console, hw, cfg.method, hardware_given)
    with status(console, f"loading {args.model}"):
        loaded = open_lm(args.model)
        data = load_text(args.data, loaded.tokenizer, args.seq_len)
    console.print(
        f"{loaded.name}: {loaded.note}; {len(data.train)} training and "
        f"{len(data.eval)} evaluation windows of {data.seq_len} tokens"
    )
    model = loaded.model.to(args.device).eval()
    cfg = absolute_budget(cfg, profile_lm(model, regime, cfg.hardware).energy_j)
    kind = DecoderLM(data, cfg, regime, loaded.name, loaded.tokenizer, loaded.note)
    run_cfg = lm_run_config(cfg, schedule=args.schedule, distill=args.distill, shard=args.fsdp)

    def probes_on(bar) -> None:
        kind.on_probe = lambda i, n: bar.on_items(i, n, "loss probes")

    result = run_with_progress(console, args, model, kind, run_cfg, loaded.name, probes_on)
    if result is None:
        return 130
    for line in lm_run_lines(result.report, out):
        console.print(line)
    return 0 if result.report["outcome"]["ok"] else 1
