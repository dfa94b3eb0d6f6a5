"""``energyprune search``: the accuracy × energy × latency Pareto search, and --finalize."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from energyprune.cli.common import (
    add_model_args,
    add_val_from,
    load_data_with_bar,
    load_model,
)
from energyprune.cli.kind_flags import record_flags, refuse_flags
from energyprune.cli.progress import Progress, status
from energyprune.energy.measurement.noise import TOO_NOISY
from energyprune.errors import ConfigError
from energyprune.models.zoo import load_weights


def add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="multi-objective search: accuracy × energy × latency Pareto front",
        description="An optuna NSGA-II study over pruning configurations; each trial prunes, "
        "fine-tunes for a short proxy budget and scores validation accuracy, energy (measured "
        "with a meter, else estimated) and measured latency. Writes DIR/pareto.json and "
        "DIR/pareto.png; the study (DIR/study.db) resumes when run again.",
        epilog="examples:\n  energyprune search digits_cnn --data digits --trials 20 --out s/\n"
        "  # two workers on one study:\n  energyprune search digits_cnn --data digits "
        "--trials 40 --out s/ & energyprune search digits_cnn --data digits --trials 40 "
        "--out s/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument(
        "--data",
        help="digits (default) | cifar10:PATH | ... (see prune) | text:TRAIN[,EVAL] for a "
        "language model",
    )
    p.add_argument("--trials", type=int, default=20, help="complete trials the study should hold")
    p.add_argument("--objectives", default="accuracy,energy,latency")
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32, or fp32,int8 to search precision too (int8: CPU PT2E, latency compiled)",
    )
    p.add_argument(
        "--target-range",
        help="energy target range, LOW:HIGH (default: 0.2:0.9 images, 0.5:0.95 LMs)",
    )
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--hardware", help="default: horowitz-45nm for images, h100-sxm for language models"
    )
    p.add_argument("--proxy-epochs", type=int, default=1, help="fine-tune epochs per trial")
    p.add_argument("--proxy-batches", type=int, help="cap batches per proxy epoch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    p.add_argument("--batch-size", type=int, default=64)
    add_val_from(p)
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=30,
        help="train the dense model first when no --weights are given",
    )
    p.add_argument("--storage", help="optuna storage URL shared by workers (default: DIR/study.db)")
    p.add_argument("--study-name", default="energyprune")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel trials in this process")
    p.add_argument("--seed", type=int, default=0)
    _add_finalize_args(p)
    _add_lm_args(p)
    record_flags(p)
    p.set_defaults(run=_run_search)


def _add_finalize_args(p: argparse.ArgumentParser) -> None:
    """--finalize: the full pipeline on the knee point, and its settings."""
    p.add_argument(
        "--finalize",
        action="store_true",
        help="run the full prune → fine-tune pipeline on the knee point",
    )
    p.add_argument("--finetune-epochs", type=int, default=3, help="(--finalize) per step")
    p.add_argument("--steps", type=int, default=3, help="(--finalize) pruning steps")
    p.add_argument("--max-acc-drop", type=float, default=1.0, help="(--finalize) guardrail")


def _add_lm_args(p: argparse.ArgumentParser) -> None:
    """The language-model search's own settings (refused for an image model)."""
    g = p.add_argument_group("language models (smollm2-135m, hf:DIR; --data text:)")
    g.add_argument("--regime", default="decode:batch=1,context=1024", help="as for prune")
    g.add_argument(
        "--methods",
        default="energy,energy+bits,depth,width",
        help="cut methods searched: the front spans layers (depth), width, both (energy) and "
        "int8 / int4 weights and KV cache (energy+bits)",
    )
    g.add_argument("--finetune-steps", type=int, default=20, help="proxy distillation steps (20)")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per text window (512)")
    g.add_argument("--eval-windows", type=int, default=20, help="perplexity windows (20)")
    g.add_argument("--calib-windows", type=int, default=16, help="scoring windows (16)")
    g.add_argument("--probe-windows", type=int, default=2, help="loss-probe windows (2)")


#: search flags only one kind takes
_ONLY = {
    "image": (
        "objectives",
        "precision",
        "proxy_epochs",
        "proxy_batches",
        "optimizer",
        "batch_size",
        "val_from",
        "pretrain_epochs",
        "finalize",
        "finetune_epochs",
        "steps",
        "max_acc_drop",
        "n_jobs",
        "weights",
        "input_shape",
        "lr",
    ),
    "lm": (
        "regime",
        "methods",
        "finetune_steps",
        "seq_len",
        "eval_windows",
        "calib_windows",
        "probe_windows",
    ),
}


def _dense_for_search(args, built, data, console: Console):
    from safetensors.torch import save_file

    from energyprune.files import atomic_path
    from energyprune.pipeline.finetune import TrainConfig, finetune

    cached = Path(args.out) / "dense.safetensors"
    if args.weights:
        return built.model
    if cached.is_file():
        load_weights(built.model, cached)
        return built.model
    console.print(f"no --weights: training {built.name} for {args.pretrain_epochs} epochs first")
    torch.manual_seed(args.seed)
    cfg = TrainConfig(epochs=args.pretrain_epochs, lr=3e-3, optimizer="adamw", seed=args.seed)
    with Progress(console, stage="pre-training") as bar:
        finetune(built.model, data.train, cfg, on_batch=bar.on_batch)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({k: v.contiguous() for k, v in built.model.state_dict().items()}, str(tmp))
    return built.model


def _run_search(args: argparse.Namespace, console: Console) -> int:
    from energyprune.models.lms import is_lm

    kind = "lm" if is_lm(args.model) or (args.data or "").startswith("text:") else "image"
    refuse_flags(args, _ONLY["image" if kind == "lm" else "lm"], kind)
    if kind == "lm":
        return _run_lm_search(args, console)
    args.data = args.data or "digits"
    args.hardware = args.hardware or "horowitz-45nm"
    args.target_range = args.target_range or "0.2:0.9"
    return _run_image_search(args, console)


def _target_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--target-range must look like 0.2:0.9, got '{text}'") from None
    return lo, hi


def _run_lm_search(args: argparse.Namespace, console: Console) -> int:
    """A language model's perplexity x J/token front, each trial one run of the loop."""
    from energyprune.cli.prune_lm import LM_METHOD_NAMES
    from energyprune.energy.lm.regimes import parse_regime
    from energyprune.pipeline.kind_search import KindSearch, search_kind
    from energyprune.pipeline.lm_kind import DecoderLM
    from energyprune.pipeline.lm_prune import LMPruneConfig, lm_run_config
    from energyprune.pipeline.text import load_text
    from energyprune.pruning.lm_export import open_lm
    from energyprune.reports.lm import lm_front_table

    if not (args.data or "").startswith("text:"):
        raise ConfigError("searching a language model needs --data text:TRAIN[,EVAL]")
    methods = tuple(m.strip() for m in args.methods.split(","))
    unknown = [m for m in methods if m not in LM_METHOD_NAMES]
    if unknown:
        raise ConfigError(
            f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(LM_METHOD_NAMES)}"
        )
    if args.hardware is None:
        args.hardware = "h100-sxm"
        console.print("priced on h100-sxm, the default for language models (--hardware to change)")
    regime = parse_regime(args.regime)
    options = LMPruneConfig(
        hardware=args.hardware,
        finetune_steps=args.finetune_steps,
        eval_windows=args.eval_windows,
        calib_windows=args.calib_windows,
        probe_windows=args.probe_windows,
        seed=args.seed,
    )
    lo, hi = _target_range(args.target_range or "0.5:0.95")
    how = KindSearch(
        trials=args.trials,
        target_range=(lo, hi),
        choice_values=methods,
        storage=args.storage,
        study_name=args.study_name,
        seed=args.seed,
    )
    with status(console, f"loading {args.model}"):
        loaded = open_lm(args.model)
        data = load_text(args.data, loaded.tokenizer, args.seq_len)
    kind = DecoderLM(data, options, regime, loaded.name, loaded.tokenizer, loaded.note)
    with Progress(console, stage="trial distillation") as bar:
        result = search_kind(
            kind,
            loaded.model.eval(),
            lm_run_config(options),
            args.out,
            how,
            choose=DecoderLM.for_search,
            log=bar.log,
            on_batch=bar.on_batch,
        )
    console.print(lm_front_table(result))
    console.print(f"knee: trial {result.knee} (★) · wrote {args.out}/pareto.json, pareto.png")
    return 0


def _run_image_search(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pipeline.driver import check_compatible, meter_device_for
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.search import check_precisions, search
    from energyprune.reports.report import front_table

    lo, hi = _target_range(args.target_range)
    precisions = tuple(v.strip() for v in args.precision.split(","))
    meter_device = meter_device_for("cpu")
    check_precisions(precisions, meter_device)
    built, _ = load_model(args)
    data = load_data_with_bar(console, args, seed=args.seed)
    check_compatible(built.model, data, built.name)
    dense = _dense_for_search(args, built, data, console)
    proxy = TrainConfig(
        epochs=args.proxy_epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        max_batches=args.proxy_batches,
    )
    with Progress(console, stage="trial fine-tune") as bar:
        result = search(
            dense,
            data,
            args.out,
            log=bar.log,
            on_batch=bar.on_batch,
            trials=args.trials,
            objectives=tuple(o.strip() for o in args.objectives.split(",")),
            target_range=(lo, hi),
            proxy=proxy,
            hardware=args.hardware,
            storage=args.storage,
            study_name=args.study_name,
            n_jobs=args.n_jobs,
            seed=args.seed,
            meter_device=meter_device,
            precisions=precisions,
        )
    console.print(front_table(result))
    console.print(f"knee: trial {result.knee} (★) · wrote {args.out}/pareto.json, pareto.png")
    if result.noisy_front and "latency" in result.objectives:
        numbers = ", ".join(map(str, result.noisy_front))
        console.print(
            f"[yellow]latency of front trials {numbers}: {TOO_NOISY}; their place on the "
            "front and the knee may be wrong[/]"
        )
    if args.finalize and result.knee is not None:
        _finalize(args, built, dense, data, result, console)
    return 0


def _finalize(args, built, dense, data, result, console: Console) -> None:
    from energyprune.pipeline.driver import run_and_write
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.run import Hooks, RunConfig
    from energyprune.pruning.spec import PruneSpec
    from energyprune.reports.report import run_table

    knee = next(t for t in result.trials if t["number"] == result.knee)
    spec = PruneSpec.from_dict(knee["spec"])  # the knee trial's prune, caps included
    cfg = RunConfig(
        target_energy=spec.target_energy,
        steps=args.steps,
        max_acc_drop=args.max_acc_drop,
        train=TrainConfig(epochs=args.finetune_epochs, lr=args.lr, optimizer=args.optimizer),
        spec=spec,
        seed=args.seed,
    )
    hooks = Hooks(log=console.print)
    final = run_and_write(dense, data, cfg, Path(args.out) / "final", arch=built.name, hooks=hooks)
    if final is None:
        return
    console.print(run_table(final.report))
    if knee["precision"] == "int8":
        from energyprune.cli.quantize import write_int8

        write_int8(
            final.model.cpu(),
            final.plan_for(built.name, args.hardware, data.input_shape),
            data,
            Path(args.out) / "final" / "int8",
            console,
            hardware=args.hardware,
            max_acc_drop=args.max_acc_drop,
        )
