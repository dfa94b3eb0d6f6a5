"""``energyprune export``: a saved pruned model to ONNX, or a pruned Llama to GGUF."""

from __future__ import annotations

import argparse

from rich.console import Console

from energyprune.errors import ConfigError


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a pruned model folder to ONNX or GGUF (llama.cpp)",
        description="Rebuild a pruned model from DIR (plan.json + model.safetensors, or a "
        "language model's Hugging Face folder) and export it: to ONNX with a dynamic batch "
        "dimension (a language model: token ids to logits, no cache, --seq-len tokens), or "
        "a Llama-architecture language model to GGUF for llama.cpp (--format gguf --out "
        "FILE.gguf; widths that differ per layer are written as per-layer arrays).",
    )
    p.add_argument("dir", help="folder written by `energyprune prune --out`")
    p.add_argument(
        "--format",
        choices=("onnx", "gguf"),
        help="onnx (the default with --onnx) or gguf (a Llama LM folder, needs --out)",
    )
    p.add_argument("--onnx", metavar="PATH", help="ONNX file to write")
    p.add_argument("--out", metavar="PATH", help="file to write (--format gguf: FILE.gguf)")
    p.add_argument(
        "--bits",
        type=int,
        help="GGUF weight matrices: 16 (F16, default), 8 (Q8_0) or 4 (Q4_0); norms stay F32",
    )
    p.add_argument("--seq-len", type=int, help="ONNX of a language model: tokens per input (128)")
    p.set_defaults(run=_run_export)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """(format, path) from the flags; a combination that says two things is one line."""
    fmt = args.format or ("onnx" if args.onnx else None)
    if fmt is None:
        raise ConfigError("name an output: --onnx PATH, or --format gguf --out FILE.gguf")
    if fmt == "gguf":
        if args.onnx:
            raise ConfigError("--onnx writes ONNX: with --format gguf name the file with --out")
        if not args.out:
            raise ConfigError("--format gguf needs --out FILE.gguf")
        if args.seq_len is not None:
            raise ConfigError("--seq-len is for ONNX export; GGUF has no fixed input length")
        return fmt, args.out
    if args.onnx and args.out:
        raise ConfigError("--onnx and --out both name the ONNX file: pass one")
    if args.bits is not None:
        raise ConfigError("--bits is for --format gguf; ONNX export keeps the weights' dtype")
    if not (args.onnx or args.out):
        raise ConfigError("--format onnx needs --onnx PATH (or --out PATH)")
    return fmt, args.onnx or args.out


def _run_export(args: argparse.Namespace, console: Console) -> int:
    from energyprune.models.lms import lm_folder
    from energyprune.pruning.export import export_onnx, load

    fmt, path = _target(args)
    folder = lm_folder(args.dir)
    if fmt == "gguf":
        return _export_gguf(args, folder, path, console)
    if folder is not None:
        return _export_lm(args, folder, path, console)
    model, plan = load(args.dir)
    export_onnx(model, plan.example_input(model), path)
    console.print(f"wrote {path}")
    return 0


def _export_lm(args: argparse.Namespace, folder, path: str, console: Console) -> int:
    import torch

    from energyprune.pruning.export import export_onnx
    from energyprune.pruning.lm_export import LogitsOnly, load_lm

    seq_len = 128 if args.seq_len is None else args.seq_len
    if seq_len < 2:
        raise ConfigError(f"--seq-len must be >= 2, got {seq_len}")
    model = LogitsOnly(load_lm(folder)).eval()
    ids = torch.zeros(2, seq_len, dtype=torch.long)  # batch 2: the batch stays dynamic
    export_onnx(model, ids, path)
    console.print(f"wrote {path} (token ids [batch, {seq_len}] -> logits, no cache)")
    return 0


def _export_gguf(args: argparse.Namespace, folder, path: str, console: Console) -> int:
    from energyprune.models.hf import read_hf_config
    from energyprune.pruning.gguf_export import (
        check_gguf_bits,
        check_gguf_config,
        require_gguf,
        write_gguf,
    )
    from energyprune.pruning.lm_export import load_lm

    bits = check_gguf_bits(16 if args.bits is None else args.bits)
    if folder is None:
        raise ConfigError(
            f"{args.dir} holds no language model (config.json): GGUF export takes a Llama "
            "folder written by `prune --out` or save_pretrained"
        )
    require_gguf()
    check_gguf_config(read_hf_config(str(folder)))  # refused before the weights load
    summary = write_gguf(load_lm(folder), path, bits=bits, tokenizer=folder)
    size = summary.size_bytes / 2**20
    size_text = f"{size:.1f} MiB" if size >= 1 else f"{summary.size_bytes / 1024:.0f} KiB"
    console.print(
        f"wrote {summary.path} ({size_text}, {summary.tensors} tensors: "
        f"{' + '.join(f'{n} {fmt}' for fmt, n in summary.formats.items())}; "
        f"{len(summary.widths['feed_forward_length'])} layers)"
    )
    how = "per layer (arrays, architecture deci)" if summary.per_layer else "uniform"
    widths = ", ".join(f"{key} {_widths(values)}" for key, values in summary.widths.items())
    console.print(f"widths {how}: {widths}", soft_wrap=True)
    console.print(f"tokenizer: {summary.tokenizer or 'not written'}")
    for note in summary.notes:
        console.print(f"note: {note}", soft_wrap=True)
    return 0


def _widths(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(values)
