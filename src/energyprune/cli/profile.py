"""`energyprune profile`: estimated per-layer energy."""

from __future__ import annotations

import argparse

import torch
from rich.console import Console

from energyprune.cli.common import (
    add_model_args,
    load_model,
    shape_error,
)
from energyprune.energy.hardware.profile import (
    BUILTIN_PROFILES,
    DTYPES,
    builtin_summaries,
    load_hardware,
)
from energyprune.errors import ConfigError, EnergyPruneError
from energyprune.files import atomic_write_text, check_writable_file
from energyprune.models.lms import is_lm
from energyprune.models.placement import example_input


def _profiles_help() -> str:
    """One line per built-in hardware profile (``--hardware NAME``)."""
    summaries = builtin_summaries()
    width = max(map(len, summaries))
    lines = [f"  {name:<{width}}  {text}" for name, text in summaries.items()]
    return "built-in hardware profiles (--hardware NAME):\n" + "\n".join(lines)


def add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="estimate per-layer energy of a model",
        description="Estimate per-layer inference energy (compute + data movement) of a model "
        "under a hardware profile. Figures are estimates, never measurements.",
        epilog="examples:\n  energyprune profile resnet56 --weights cifar10_resnet56.safetensors\n"
        "  energyprune profile resnet50 --hardware eyeriss-65nm --json r.json --plot r.png\n"
        "  energyprune profile mypkg.models:build --input-shape 1,3,64,64\n"
        "  energyprune profile hf:llama/config.json --phase decode --batch 8 --context 1024 "
        "--hardware h100-sxm\n"
        "  energyprune profile hf:llama/ --workload prompt=512,output=256,batch=64 "
        "--hardware h100-sxm\n\n" + _profiles_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument(
        "--hardware",
        help=f"built-in ({', '.join(BUILTIN_PROFILES)}) or a YAML file (default: horowitz-45nm "
        "for image models, h100-sxm for language models)",
    )
    p.add_argument("--dtype", choices=DTYPES, help="price tensors as this dtype (default: as run)")
    p.add_argument("--json", metavar="PATH", help="write the profile as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the costliest layers")
    p.add_argument(
        "--top",
        type=int,
        default=15,
        metavar="N",
        help="show the N costliest layers (0 = all, in execution order)",
    )
    _add_regime_args(p)
    p.set_defaults(run=_run_profile)


def _add_regime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "language models (smollm2-135m, hf:PATH: a config.json or a model folder, a folder "
        "prune --out wrote; priced per token)"
    )
    g.add_argument("--phase", choices=("prefill", "decode"), help="price one pass (default decode)")
    g.add_argument("--batch", type=int, default=1, metavar="B", help="sequences per pass (1)")
    g.add_argument("--prompt", type=int, default=1024, metavar="S", help="prefill tokens (1024)")
    g.add_argument(
        "--context", type=int, default=1024, metavar="L", help="cached tokens in decode (1024)"
    )
    g.add_argument(
        "--workload",
        metavar="prompt=S,output=N,batch=B",
        help="whole requests: J per output token, prefill included (instead of --phase)",
    )
    g.add_argument(
        "--weights-dtype",
        choices=("int8", "fp8", "int4"),
        help="the decoder's linear weights as a server stores them (weight-only; the embedding "
        "and LM head stay as the model is)",
    )
    g.add_argument(
        "--group-size", type=int, metavar="G", help="weights per scale (default: per channel)"
    )
    g.add_argument("--kv-dtype", choices=("int8", "fp8"), help="the KV cache as stored")
    g.add_argument(
        "--tensor-parallel",
        type=int,
        metavar="N",
        help="split over N GPUs (heads, inner widths, vocabulary; two all-reduces per layer "
        "over the profile's interconnect); J per token summed over the GPUs",
    )
    g.add_argument(
        "--expert-parallel",
        type=int,
        metavar="N",
        help="mixtures of experts: E/N experts per GPU, attention data-parallel over N GPUs "
        "(B/N requests each), two all-to-alls per MoE layer; J per token summed over the GPUs",
    )
    g.add_argument(
        "--runtime",
        choices=("graphs", "eager"),
        help="how the server runs kernels: graphs (default: CUDA graphs, 9 fused kernels per "
        "decoder layer) or eager (one kernel and launch per aten op)",
    )


def _regime(args: argparse.Namespace):
    from energyprune.energy.lm.regimes import Decode, Prefill, parse_workload

    if args.workload and args.phase:
        raise ConfigError("pass --workload or --phase, not both")
    if args.workload:
        return parse_workload(args.workload)
    if args.phase == "prefill":
        return Prefill(batch=args.batch, prompt=args.prompt)
    return Decode(batch=args.batch, context=args.context)


def _run_lm(args: argparse.Namespace, console: Console) -> int:
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.pruning.lm_export import lm_for_pricing
    from energyprune.reports.lm import lm_layer_table, lm_summary_line

    regime = _regime(args)
    config = lm_for_pricing(args.model)
    if args.json:
        check_writable_file(args.json, "--json")
    keys = (
        *("weights_dtype", "group_size", "kv_dtype", "tensor_parallel", "expert_parallel"),
        "runtime",
    )
    stored = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    lm = profile_lm(config, regime, args.hardware, args.dtype, name=args.model, **stored)
    console.print(lm_layer_table(lm, top=args.top))
    console.print(lm_summary_line(lm), soft_wrap=True)
    if lm.uncosted_ops:
        ops = ", ".join(f"{op} ×{n}" for op, n in sorted(lm.uncosted_ops.items()))
        console.print(
            f"[yellow]warning:[/] no cost formula for {ops}: their arithmetic is "
            "missing from the estimate (their bytes are counted)"
        )
    if args.json:
        atomic_write_text(args.json, lm.to_json() + "\n")
        console.print(f"wrote {args.json}")
    return 0


#: flags that only price language models
_LM_ONLY = (
    *("phase", "workload", "weights_dtype", "group_size", "kv_dtype", "tensor_parallel"),
    *("expert_parallel", "runtime"),
)


def _refuse_lm_flags(args: argparse.Namespace) -> None:
    given = ["--" + k.replace("_", "-") for k in _LM_ONLY if getattr(args, k)]
    if given:
        raise ConfigError(
            f"{given[0]}: these flags price language models: pass MODEL as a built-in LM "
            "(smollm2-135m) or hf:PATH (a config.json or a folder holding one)"
        )


def _run_profile(args: argparse.Namespace, console: Console) -> int:
    if args.top < 0:
        raise ConfigError(f"--top must be >= 0, got {args.top}")
    lm = is_lm(args.model)
    if args.hardware is None:
        args.hardware = "h100-sxm" if lm else "horowitz-45nm"
        if lm:
            console.print(
                "priced on h100-sxm, the default for language models (--hardware to change)"
            )
    load_hardware(args.hardware)  # a misspelled profile fails before the model is built
    if lm:
        if args.plot or args.weights or args.input_shape:
            raise ConfigError(
                "--plot, --weights and --input-shape are not for language models: their "
                "regime flags set the shapes (--phase, --workload)"
            )
        return _run_lm(args, console)
    _refuse_lm_flags(args)
    built, shape = load_model(args)  # and a misspelled model before the tracer is imported
    from energyprune.energy.pricing.estimates import EnergyProfile, profile
    from energyprune.reports.plots import plot_layer_energy
    from energyprune.reports.report import layer_table, summary_line

    try:
        with torch.no_grad():
            prof: EnergyProfile = profile(
                built.model,
                example_input(built.model, shape),
                args.hardware,
                args.dtype,
                name=built.name,
            )
    except (RuntimeError, ValueError, IndexError) as e:
        if isinstance(e, EnergyPruneError):
            raise
        raise shape_error(built.name, shape, e) from e
    console.print(layer_table(prof, top=args.top))
    console.print(summary_line(prof), soft_wrap=True)
    if prof.uncosted_ops:
        ops = ", ".join(f"{op} ×{n}" for op, n in sorted(prof.uncosted_ops.items()))
        console.print(
            f"[yellow]warning:[/] no cost formula for {ops}: their arithmetic is "
            "missing from the estimate (their bytes are counted)"
        )
    if args.json:
        atomic_write_text(args.json, prof.to_json() + "\n")
        console.print(f"wrote {args.json}")
    if args.plot:
        plot_layer_energy(prof, args.plot, top=max(args.top, 30) if args.top else 30)
        console.print(f"wrote {args.plot}")
    return 0
