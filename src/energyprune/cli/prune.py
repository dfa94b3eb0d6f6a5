"""`energyprune prune` (one-shot, or the fine-tuning pipeline with --data) and `export`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from energyprune.cli.common import (
    add_model_args,
    add_val_from,
    fraction,
    load_data_with_bar,
    load_model,
    run_with_progress,
)
from energyprune.cli.kind_flags import (
    IMAGE,
    LM,
    PER_KIND_HELP,
    fill_kind_defaults,
    record_flags,
    refuse_for_kind,
    refuse_idle_image_flags,
)
from energyprune.cli.progress import Progress, status
from energyprune.energy.hardware.profile import BUILTIN_PROFILES, load_hardware
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input


def add_prune(sub: argparse._SubParsersAction) -> None:
    from energyprune.cli.prune_lm import add_lm_args
    from energyprune.cli.quantize import add_int8_args

    p = sub.add_parser(
        "prune",
        help="prune a model to an estimated-energy budget",
        description="Prune a model so its estimated energy meets a target. The kind of model "
        "follows from MODEL: an image classifier (built-in, torchvision name, module:factory, "
        "a pruned folder) or a language model (smollm2-135m, hf:DIR, a folder prune --out "
        "wrote for one). Image classifiers without --data: one cut, no fine-tuning; writes "
        "plan.json, model.safetensors, profile_before.json and profile_after.json. With --data "
        "(text:TRAIN[,EVAL] for language models): the pipeline (steps toward the target, each "
        "recovered and checked by a guardrail: top-1 drop for images, perplexity rise for "
        "language models; resumable); also writes report.json and report.md. A flag the kind "
        "does not use is an error. Exit 1 when the energy budget or the guardrail is missed.",
        epilog="examples:\n  energyprune prune resnet56 --weights cifar10_resnet56.safetensors "
        "--target-energy 0.5 --out pruned/\n  energyprune prune resnet50 --target-energy 0.6 "
        "--criterion l2 --round-to 8 --ignore 're:layer4\\..*' --out r50/\n  energyprune prune "
        "smollm2-135m --data text:wiki.valid.tokens,wiki.test.raw --target-energy 0.7 "
        "--out lm/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    _add_spec_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_pipeline_args(p.add_argument_group("fine-tuning pipeline (with --data)"))
    add_int8_args(p)
    add_lm_args(p)
    record_flags(p)
    p.set_defaults(run=_run_prune)


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    """The PruneSpec's settings."""
    from energyprune.pruning.spec import CRITERION_NAMES, GRANULARITIES, STRATEGY_NAMES

    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--target-energy",
        type=fraction("a fraction of dense energy"),
        metavar="F",
        help="fraction of the dense estimate to reach, e.g. 0.5",
    )
    budget.add_argument(
        "--max-joules", type=float, metavar="J", help="absolute estimated joules per forward pass"
    )
    budget.add_argument(
        "--max-joules-per-token",
        type=float,
        metavar="J",
        help="language models: absolute estimated J per token in --regime",
    )
    p.add_argument("--granularity", choices=GRANULARITIES, default="channel")
    p.add_argument("--criterion", choices=CRITERION_NAMES, default="energy")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="global")
    p.add_argument(
        "--hardware",
        help=f"built-in ({', '.join(BUILTIN_PROFILES)}) or a YAML file; "
        f"{PER_KIND_HELP['hardware']}",
    )
    p.add_argument("--round-to", type=int, metavar="N", help=PER_KIND_HELP["round_to"])
    p.add_argument(
        "--max-layer-ratio",
        type=fraction("a fraction of a group's channels"),
        default=0.9,
        help="at most this fraction of any group's channels is removed",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="module name or 're:<regex>' never pruned (repeatable)",
    )
    p.add_argument(
        "--prune-residual",
        action="store_true",
        help="also prune transformer residual width (changes LayerNorm statistics)",
    )
    p.add_argument("--nm", default="2:4", help="N:M pattern for --granularity nm (N kept of M)")


def _add_pipeline_args(loop: argparse._ArgumentGroup) -> None:
    """prune → fine-tune → evaluate with --data."""
    from energyprune.pipeline.config import SCHEDULES

    loop.add_argument(
        "--data",
        help="digits | cifar10:PATH | imagefolder:PATH | module:factory | text:TRAIN[,EVAL]",
    )
    loop.add_argument("--steps", type=int, help=PER_KIND_HELP["steps"])
    loop.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="cubic",
        help="step targets (cubic: big steps first); gradual: each step's budget also falls "
        "inside its fine-tune",
    )
    loop.add_argument("--finetune-epochs", type=int, default=1, help="epochs after each step")
    loop.add_argument(
        "--max-batches",
        type=int,
        metavar="N",
        help="cap every fine-tuning epoch at N batches (a quick try; default: the whole split)",
    )
    add_recovery_args(loop)
    loop.add_argument("--final-epochs", type=int, help="final fine-tune (default: same)")
    loop.add_argument(
        "--max-acc-drop",
        type=float,
        default=0.5,
        help="guardrail: max validation top-1 drop in points",
    )
    loop.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    loop.add_argument("--lr", type=float, help=PER_KIND_HELP["lr"])
    loop.add_argument("--batch-size", type=int, help=PER_KIND_HELP["batch_size"])
    add_val_from(loop)
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--seeds", type=int, default=1, help="runs for stability (mean ± std)")
    loop.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    loop.add_argument("--resume", action="store_true", help="continue after the last step")
    loop.add_argument(
        "--quantize",
        choices=("int8", "auto"),
        help="int8: then quantise the pruned model (CPU, PT2E) into DIR/int8; auto: run "
        "'prune more' (fp32) and 'prune less + int8' to the same target and choose "
        "(DIR/prune, DIR/prune+int8, DIR/tradeoff.json)",
    )
    loop.add_argument(
        "--ddp",
        action="store_true",
        help="DistributedDataParallel fine-tuning (launch with torchrun)",
    )


def add_recovery_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Accuracy recovery: batch-norm recalibration, distillation, candidate choice."""
    p.add_argument(
        "--bn-batches",
        type=int,
        default=50,
        metavar="N",
        help="re-estimate batch-norm statistics over N training batches after every cut (0: off)",
    )
    p.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fine-tune with the dense model as teacher (default: on)",
    )
    p.add_argument("--distill-alpha", type=float, help=PER_KIND_HELP["distill_alpha"])
    p.add_argument("--distill-temperature", type=float, help=PER_KIND_HELP["distill_temperature"])
    p.add_argument(
        "--candidates",
        type=int,
        default=1,
        metavar="K",
        help="score K ways to meet each step's budget after BN recalibration, fine-tune the best",
    )
    p.add_argument(
        "--score-batches",
        type=int,
        default=8,
        metavar="K",
        help="training batches that score channels for --criterion taylor (default: 8)",
    )


def _spec(args: argparse.Namespace, nm: tuple[int, int]):
    """The command line's prune settings as one PruneSpec (both paths prune with it)."""
    from energyprune.pruning.spec import PruneSpec

    same = (
        "target_energy",
        "max_joules",
        "granularity",
        "criterion",
        "strategy",
        "hardware",
        "round_to",
        "max_layer_ratio",
        "prune_residual",
    )
    settings = {name: getattr(args, name) for name in same}
    return PruneSpec(**settings, ignored_layers=tuple(args.ignore), nm=nm)


def _run_prune(args: argparse.Namespace, console: Console) -> int:
    from energyprune.cli.prune_lm import is_lm_request, run_lm_prune

    kind = LM if is_lm_request(args) else IMAGE
    hardware_given = args.hardware is not None
    refuse_for_kind(args, kind)
    if kind == IMAGE:
        refuse_idle_image_flags(args)
    fill_kind_defaults(args, kind, console)
    load_hardware(args.hardware)  # a misspelled profile fails before the model is built
    if kind == LM:
        return run_lm_prune(args, console, hardware_given)
    from energyprune.pruning.apply import prune
    from energyprune.pruning.export import save
    from energyprune.reports.report import comparison_table

    built, shape = load_model(args)
    try:
        n, m = (int(v) for v in args.nm.split(":"))
    except ValueError:
        raise ConfigError(f"--nm must look like 2:4 (N kept of M), got '{args.nm}'") from None
    if args.data:
        return _run_pipeline(args, built, (n, m), console)
    if args.quantize:
        raise ConfigError(
            "--quantize needs --data: calibration batches come from its validation split"
        )
    with status(console, f"pruning {built.name}"):
        example = example_input(built.model, shape)
        result = prune(built.model, example, spec=_spec(args, (n, m)), name=built.name)
    result.plan.arch = {"name": built.name, "source": built.source}
    console.print(comparison_table(result.before, result.after))
    out = save(result, args.out)
    atomic_write_text(out / "profile_before.json", result.before.to_json() + "\n")
    atomic_write_text(out / "profile_after.json", result.after.to_json() + "\n")
    console.print(
        f"wrote {out}/plan.json, model.safetensors, profile_before.json, profile_after.json"
    )
    return 0


def _run_pipeline(args, built, nm, console: Console) -> int:
    from energyprune.pipeline.driver import check_compatible
    from energyprune.reports.report import run_table

    _check_pipeline_args(args)
    data = load_data_with_bar(console, args, seed=args.seed)
    check_compatible(built.model, data, built.name)
    cfg = _run_config(args, nm)
    if args.quantize == "auto":
        return _run_tradeoff(args, built, data, cfg, console)
    result = run_with_progress(console, args, built.model.to(args.device), data, cfg, built.name)
    if result is None:
        return 130
    console.print(run_table(result.report))
    if args.quantize == "int8":
        from energyprune.cli.quantize import int8_settings, write_int8

        plan = result.plan_for(built.name, args.hardware, data.input_shape)
        write_int8(
            result.model.cpu(),
            plan,
            data,
            Path(args.out) / "int8",
            console,
            hardware=args.hardware,
            max_acc_drop=args.max_acc_drop,
            **int8_settings(args),
        )
    outcome = result.report["outcome"]
    console.print(outcome["guardrail"])
    console.print(outcome["budget"])
    model_files = ", plan.json, model.safetensors" if result.plan is not None else ""
    console.print(
        f"wrote {args.out}/report.json, report.md, energy_layers.png, "
        f"accuracy_energy.png{model_files}"
    )
    return 0 if outcome["ok"] else 1


def _check_pipeline_args(args) -> None:
    from energyprune.pipeline.finetune import distributed

    if args.ddp and args.quantize:
        raise ConfigError(
            "--quantize is a CPU step after training: drop it under --ddp and run "
            "`energyprune quantize DIR --data ...` on the result"
        )
    if args.ddp and not distributed():
        raise ConfigError(
            "--ddp needs torchrun (WORLD_SIZE > 1): torchrun --nproc-per-node N "
            "-m energyprune.cli prune ..."
        )
    if args.target_energy is None:
        raise ConfigError(
            "--max-joules is for a prune without --data: the fine-tuning pipeline takes "
            "--target-energy (a fraction of dense)"
        )


def _run_config(args, nm):
    """The command line's run settings (the prune ones as one PruneSpec)."""
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.run import RunConfig

    train = TrainConfig(
        epochs=args.finetune_epochs,
        max_batches=args.max_batches,
        lr=args.lr,
        optimizer=args.optimizer,
        distill_alpha=args.distill_alpha,
        distill_temperature=args.distill_temperature,
    )
    return RunConfig(
        target_energy=args.target_energy,
        steps=args.steps,
        schedule=args.schedule,
        max_acc_drop=args.max_acc_drop,
        train=train,
        final_epochs=args.final_epochs,
        spec=_spec(args, nm),
        seed=args.seed,
        seeds=args.seeds,
        bn_batches=args.bn_batches,
        distill=args.distill,
        candidates=args.candidates,
        score_batches=args.score_batches,
    )


def _run_tradeoff(args, built, data, cfg, console: Console) -> int:
    from energyprune.cli.quantize import int8_settings
    from energyprune.pipeline.codesign import prune_or_quantize
    from energyprune.pipeline.run import Hooks
    from energyprune.reports.report import tradeoff_table

    with Progress(console, args.steps) as bar:
        try:
            report = prune_or_quantize(
                built.model.to(args.device),
                data,
                cfg,
                args.out,
                arch=built.name,
                int8=int8_settings(args),
                resume=args.resume,
                device=args.device,
                hooks=Hooks(bar.log, bar.on_batch, bar.on_step),
            )
        except KeyboardInterrupt:
            console.print("stopped: rerun with --resume to continue the pruning runs")
            return 130
    console.print(tradeoff_table(report))
    console.print(f"wrote {args.out}/tradeoff.json, {args.out}/prune/, {args.out}/prune+int8/")
    return 0
