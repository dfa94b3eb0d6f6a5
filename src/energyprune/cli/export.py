"""``energyprune export``: a saved pruned model to ONNX."""

from __future__ import annotations

import argparse

from rich.console import Console


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a pruned model folder to ONNX",
        description="Rebuild a pruned model from DIR (plan.json + model.safetensors, or a "
        "language model's Hugging Face folder) and export it to ONNX with a dynamic batch "
        "dimension (a language model: token ids to logits, no cache, --seq-len tokens).",
    )
    p.add_argument("dir", help="folder written by `energyprune prune --out`")
    p.add_argument("--onnx", required=True, metavar="PATH", help="ONNX file to write")
    p.add_argument(
        "--seq-len", type=int, default=128, help="language models: tokens per input (128)"
    )
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace, console: Console) -> int:
    from energyprune.models.lms import lm_folder
    from energyprune.pruning.export import export_onnx, load

    folder = lm_folder(args.dir)
    if folder is not None:
        return _export_lm(args, folder, console)
    model, plan = load(args.dir)
    export_onnx(model, plan.example_input(model), args.onnx)
    console.print(f"wrote {args.onnx}")
    return 0


def _export_lm(args: argparse.Namespace, folder, console: Console) -> int:
    import torch

    from energyprune.errors import ConfigError
    from energyprune.pruning.export import export_onnx
    from energyprune.pruning.lm_export import LogitsOnly, load_lm

    if args.seq_len < 2:
        raise ConfigError(f"--seq-len must be >= 2, got {args.seq_len}")
    model = LogitsOnly(load_lm(folder)).eval()
    ids = torch.zeros(2, args.seq_len, dtype=torch.long)  # batch 2: the batch stays dynamic
    export_onnx(model, ids, args.onnx)
    console.print(f"wrote {args.onnx} (token ids [batch, {args.seq_len}] -> logits, no cache)")
    return 0
