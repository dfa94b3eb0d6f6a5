"""Command line: parse → call the library → render. Errors a user can fix exit 2 in one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from energyprune.energy.hardware import BUILTIN_PROFILES
from energyprune.energy.measure import Protocol, measure
from energyprune.energy.model import DTYPES, EnergyProfile, profile
from energyprune.errors import ConfigError, EnergyPruneError
from energyprune.files import atomic_write_text
from energyprune.pipeline.models import BuiltModel, build_model, load_weights, parse_input_shape
from energyprune.pipeline.report import layer_table, measurement_table, summary_line

__all__ = ["main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"energyprune: error: {message} (see '{self.prog} --help')\n")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="resnet20 | resnet56 | vgg16_bn | a torchvision name | module:fn")
    p.add_argument("--weights", help="safetensors file, shard index JSON, or weights-only .pt")
    p.add_argument(
        "--input-shape",
        help="e.g. 1,3,224,224 (default: 1,3,32,32 for CIFAR built-ins, else 1,3,224,224)",
    )


def _load_model(args: argparse.Namespace) -> tuple[BuiltModel, tuple[int, ...]]:
    built = build_model(args.model)
    if args.weights:
        load_weights(built.model, args.weights)
    shape = parse_input_shape(args.input_shape) if args.input_shape else built.input_shape
    return built, shape


def _shape_error(name: str, shape: tuple[int, ...], e: Exception) -> ConfigError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(
        f"model '{name}' failed on an input of shape {','.join(map(str, shape))} "
        f"({first}); pass the shape it expects with --input-shape"
    )


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="estimate per-layer energy of a model",
        description="Estimate per-layer inference energy (compute + data movement) of a model "
        "under a hardware profile. Figures are estimates, never measurements.",
        epilog="examples:\n  energyprune profile resnet56 --weights cifar10_resnet56.safetensors\n"
        "  energyprune profile resnet50 --hardware eyeriss-65nm --json r.json --plot r.png\n"
        "  energyprune profile mypkg.models:build --input-shape 1,3,64,64",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    p.add_argument(
        "--hardware",
        default="horowitz-45nm",
        help=f"built-in ({', '.join(BUILTIN_PROFILES)}) or a YAML file",
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
    p.set_defaults(run=_run_profile)


def _run_profile(args: argparse.Namespace, console: Console) -> int:
    if args.top < 0:
        raise ConfigError(f"--top must be >= 0, got {args.top}")
    built, shape = _load_model(args)
    try:
        with torch.no_grad():
            prof: EnergyProfile = profile(
                built.model, torch.randn(*shape), args.hardware, args.dtype, name=built.name
            )
    except (RuntimeError, ValueError, IndexError) as e:
        if isinstance(e, EnergyPruneError):
            raise
        raise _shape_error(built.name, shape, e) from e
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
        prof.plot(args.plot, top=max(args.top, 30) if args.top else 30)
        console.print(f"wrote {args.plot}")
    return 0


def _add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure energy per sample and latency with a real meter",
        description="Measure joules per sample (NVML / RAPL through Zeus) and latency, following "
        "docs/measurement.md. Without a meter the result says measured: false and carries the "
        "labelled estimate; latency is always measured.",
        epilog="examples:\n  energyprune measure resnet56 --device cuda --batch-size 1024 "
        "--dtype fp16 --channels-last\n  energyprune measure resnet20 --device cpu --json m.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default: cuda when available)",
    )
    p.add_argument("--batch-size", type=int, help="batch size (default: the input shape's)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="cast model and input")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--cuda-graph", action="store_true", help="replay a captured CUDA graph")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum window length (s)")
    p.add_argument("--windows", type=int, default=5, help="number of energy windows")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds")
    p.add_argument("--idle", type=float, default=2.0, help="idle-power window (s)")
    p.add_argument("--no-meter", action="store_true", help="latency only; energy is estimated")
    p.add_argument("--json", metavar="PATH", help="write the measurement as JSON")
    p.set_defaults(run=_run_measure)


def _run_measure(args: argparse.Namespace, console: Console) -> int:
    built, shape = _load_model(args)
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        shape = (args.batch_size, *shape[1:])
    protocol = Protocol(
        min_window_s=args.seconds, windows=args.windows, warmup_s=args.warmup, idle_s=args.idle
    )
    with console.status("measuring") as status:
        try:
            result = measure(
                built.model,
                torch.randn(*shape),
                device=args.device,
                meter=None if args.no_meter else "auto",
                dtype=args.dtype,
                channels_last=args.channels_last,
                cuda_graph=args.cuda_graph,
                compile=args.compile,
                protocol=protocol,
                progress=lambda stage: status.update(f"measuring {built.name}: {stage}"),
            )
        except (RuntimeError, ValueError, IndexError) as e:
            if isinstance(e, EnergyPruneError):
                raise
            raise _shape_error(built.name, shape, e) from e
    console.print(measurement_table(result, built.name))
    if args.json:
        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a hardware profile to measured energy on this device",
        description="Measure a designed set of variants (conv/linear stacks over widths incl. "
        "non-multiples of 8/16, batch sizes, dtypes, whole models) with the device's meter and "
        "fit the profile's costs; reports held-out ordering agreement and MAPE vs plain MACs.",
        epilog="example:\n  energyprune calibrate --device cuda --out h100.yaml "
        "--report calibration_h100.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (needs a meter)")
    p.add_argument("--out", required=True, metavar="PROFILE.yaml", help="profile to write")
    p.add_argument("--report", metavar="PATH", help="fidelity report JSON (default: beside --out)")
    p.add_argument("--base", default="gpu-generic", help="profile whose structure is refitted")
    p.add_argument("--name", help="name of the fitted profile")
    p.add_argument("--quick", action="store_true", help="a smaller variant grid")
    p.add_argument("--seconds", type=float, default=0.5, help="minimum window per variant (s)")
    p.add_argument("--windows", type=int, default=3, help="windows per variant")
    p.set_defaults(run=_run_calibrate)


def _run_calibrate(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from energyprune.energy.calibrate import calibrate, write_calibration
    from energyprune.energy.meter import open_meter

    backend = open_meter(args.device).backend  # fail fast, before any work, if there is none
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"measuring {name}")

        result = calibrate(
            args.device,
            base=args.base,
            name=args.name,
            quick=args.quick,
            seconds=args.seconds,
            windows=args.windows,
            progress=progress,
        )
    report_path = args.report or str(Path(args.out).with_suffix(".json"))
    write_calibration(result, args.out, report_path, backend)
    rep = result.report
    console.print(
        f"held-out pairwise agreement {rep['pairwise_agreement']:.3f} (plain MACs "
        f"{rep['macs_pairwise_agreement']:.3f}) · MAPE {100 * rep['mape']:.1f} % (MACs "
        f"{100 * rep['macs_mape']:.1f} %) · {rep['n_train']} train / {rep['n_heldout']} held out "
        f"· {rep['device']}",
        soft_wrap=True,
    )
    console.print(f"wrote {args.out} and {report_path}")
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    from energyprune.pruning.allocate import STRATEGIES
    from energyprune.pruning.apply import GRANULARITIES
    from energyprune.pruning.importance import CRITERIA

    p = sub.add_parser(
        "prune",
        help="prune a model to an estimated-energy budget",
        description="Prune a model so its estimated energy meets a target (no fine-tuning). "
        "Writes plan.json, model.safetensors, profile_before.json and profile_after.json.",
        epilog="examples:\n  energyprune prune resnet56 --weights cifar10_resnet56.safetensors "
        "--target-energy 0.5 --out pruned/\n  energyprune prune resnet50 --target-energy 0.6 "
        "--criterion l2 --round-to 8 --ignore 're:layer4\\..*' --out r50/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--target-energy",
        type=float,
        metavar="F",
        help="fraction of the dense estimate to reach, e.g. 0.5",
    )
    budget.add_argument(
        "--max-joules", type=float, metavar="J", help="absolute estimated joules per forward pass"
    )
    p.add_argument("--granularity", choices=GRANULARITIES, default="channel")
    p.add_argument("--criterion", choices=tuple(CRITERIA), default="energy")
    p.add_argument("--strategy", choices=STRATEGIES, default="global")
    p.add_argument(
        "--hardware",
        default="horowitz-45nm",
        help=f"built-in ({', '.join(BUILTIN_PROFILES)}) or a YAML file",
    )
    p.add_argument(
        "--round-to",
        type=int,
        metavar="N",
        help="keep widths multiples of N (default: the profile's channel_multiple)",
    )
    p.add_argument(
        "--max-layer-ratio",
        type=float,
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
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    loop = p.add_argument_group("fine-tuning pipeline (with --data)")
    loop.add_argument("--data", help="digits | cifar10:PATH | imagefolder:PATH | module:factory")
    loop.add_argument("--steps", type=int, default=3, help="pruning steps toward the target")
    loop.add_argument("--schedule", choices=("linear", "cubic"), default="cubic")
    loop.add_argument("--finetune-epochs", type=int, default=1, help="epochs after each step")
    loop.add_argument("--final-epochs", type=int, help="final fine-tune (default: same)")
    loop.add_argument(
        "--max-acc-drop",
        type=float,
        default=0.5,
        help="guardrail: max validation top-1 drop in points",
    )
    loop.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    loop.add_argument("--lr", type=float, default=0.01, help="peak learning rate (cosine)")
    loop.add_argument("--batch-size", type=int, default=128)
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--seeds", type=int, default=1, help="runs for stability (mean ± std)")
    loop.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    loop.add_argument("--resume", action="store_true", help="continue after the last step")
    loop.add_argument(
        "--ddp",
        action="store_true",
        help="DistributedDataParallel fine-tuning (launch with torchrun)",
    )
    p.set_defaults(run=_run_prune)


def _run_prune(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pipeline.report import comparison_table
    from energyprune.pruning.apply import prune
    from energyprune.pruning.export import save

    built, shape = _load_model(args)
    try:
        n, m = (int(v) for v in args.nm.split(":"))
    except ValueError:
        raise ConfigError(f"--nm must look like 2:4 (N kept of M), got '{args.nm}'") from None
    if args.data:
        return _run_pipeline(args, built, (n, m), console)
    with console.status(f"pruning {built.name}"):
        result = prune(
            built.model,
            torch.randn(*shape),
            args.target_energy,
            max_joules=args.max_joules,
            granularity=args.granularity,
            criterion=args.criterion,
            strategy=args.strategy,
            hardware=args.hardware,
            round_to=args.round_to,
            max_layer_ratio=args.max_layer_ratio,
            ignored_layers=args.ignore,
            prune_residual=args.prune_residual,
            nm=(n, m),
            name=built.name,
        )
    result.plan.arch = {"name": built.name, "source": built.source}
    console.print(comparison_table(result.before, result.after))
    out = save(result, args.out)
    atomic_write_text(out / "profile_before.json", result.before.to_json() + "\n")
    atomic_write_text(out / "profile_after.json", result.after.to_json() + "\n")
    console.print(
        f"wrote {out}/plan.json, model.safetensors, profile_before.json, profile_after.json"
    )
    return 0


def _progress_callbacks(console: Console, bar) -> tuple:
    epoch_task = bar.add_task("fine-tuning", total=None)

    def on_batch(epoch: int, i: int, n: int, loss: float) -> None:
        bar.update(
            epoch_task, completed=i + 1, total=n, description=f"epoch {epoch + 1} · loss {loss:.3f}"
        )

    return bar.console.print, on_batch


def _run_pipeline(args, built, nm, console: Console) -> int:
    from rich.progress import Progress

    from energyprune.pipeline.data import load_data
    from energyprune.pipeline.driver import check_compatible, run_and_write
    from energyprune.pipeline.finetune import TrainConfig, distributed
    from energyprune.pipeline.report import run_table
    from energyprune.pipeline.run import RunConfig

    if args.ddp and not distributed():
        raise ConfigError(
            "--ddp needs torchrun (WORLD_SIZE > 1): torchrun --nproc-per-node N "
            "-m energyprune.cli prune ..."
        )
    if args.target_energy is None:
        raise ConfigError("the fine-tuning pipeline takes --target-energy (a fraction)")
    data = load_data(args.data, batch_size=args.batch_size, seed=args.seed)
    check_compatible(built.model, data, built.name)
    cfg = RunConfig(
        target_energy=args.target_energy,
        steps=args.steps,
        schedule=args.schedule,
        max_acc_drop=args.max_acc_drop,
        train=TrainConfig(epochs=args.finetune_epochs, lr=args.lr, optimizer=args.optimizer),
        final_epochs=args.final_epochs,
        granularity=args.granularity,
        criterion=args.criterion,
        strategy=args.strategy,
        hardware=args.hardware,
        round_to=args.round_to,
        max_layer_ratio=args.max_layer_ratio,
        ignored_layers=tuple(args.ignore),
        prune_residual=args.prune_residual,
        seed=args.seed,
    )
    del nm
    with Progress(console=console, transient=True) as bar:
        log, on_batch = _progress_callbacks(console, bar)
        result = run_and_write(
            built.model.to(args.device),
            data,
            cfg,
            args.out,
            arch=built.name,
            seeds=args.seeds,
            resume=args.resume,
            device=args.device,
            log=log,
            on_batch=on_batch,
        )
    if result is None:
        console.print("stopped: the last completed step is checkpointed; rerun with --resume")
        return 130
    console.print(run_table(result.report))
    console.print(
        f"wrote {args.out}/report.json, report.md, energy_layers.png, "
        "accuracy_energy.png, plan.json, model.safetensors"
    )
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a digits CNN, prune it to 50 %% energy with fine-tuning, write a report",
        description="The main job on built-in data: trains digits_cnn on scikit-learn's digits, "
        "prunes it to 50 %% of its estimated energy in 3 fine-tuned steps with a 1-point "
        "accuracy guardrail, prints the before/after table and writes the report.",
    )
    p.add_argument("--out", default="demo-output", metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from energyprune.pipeline.demo import demo
    from energyprune.pipeline.report import run_table

    with Progress(console=console, transient=True) as bar:
        log, on_batch = _progress_callbacks(console, bar)
        result = demo(args.out, args.seed, log=log, on_batch=on_batch)
    if result is None:
        return 130
    console.print(run_table(result.report))
    console.print(f"wrote {args.out}/report.json, report.md and plots")
    return 0


def _add_search(sub: argparse._SubParsersAction) -> None:
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
    _add_model_args(p)
    p.add_argument("--data", default="digits", help="digits | cifar10:PATH | ... (see prune)")
    p.add_argument("--trials", type=int, default=20, help="complete trials the study should hold")
    p.add_argument("--objectives", default="accuracy,energy,latency")
    p.add_argument("--target-range", default="0.2:0.9", help="energy target range, LOW:HIGH")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--hardware", default="horowitz-45nm")
    p.add_argument("--proxy-epochs", type=int, default=1, help="fine-tune epochs per trial")
    p.add_argument("--proxy-batches", type=int, help="cap batches per proxy epoch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    p.add_argument("--batch-size", type=int, default=64)
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
    p.add_argument(
        "--finalize",
        action="store_true",
        help="run the full prune → fine-tune pipeline on the knee point",
    )
    p.add_argument("--finetune-epochs", type=int, default=3, help="(--finalize) per step")
    p.add_argument("--steps", type=int, default=3, help="(--finalize) pruning steps")
    p.add_argument("--max-acc-drop", type=float, default=1.0, help="(--finalize) guardrail")
    p.set_defaults(run=_run_search)


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
    finetune(built.model, data.train, cfg)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({k: v.contiguous() for k, v in built.model.state_dict().items()}, str(tmp))
    return built.model


def _run_search(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from energyprune.pipeline.data import load_data
    from energyprune.pipeline.driver import check_compatible, meter_device_for
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.search import search

    try:
        lo, hi = (float(v) for v in args.target_range.split(":"))
    except ValueError:
        raise ConfigError(
            f"--target-range must look like 0.2:0.9, got '{args.target_range}'"
        ) from None
    built, _ = _load_model(args)
    data = load_data(args.data, batch_size=args.batch_size, seed=args.seed)
    check_compatible(built.model, data, built.name)
    dense = _dense_for_search(args, built, data, console)
    proxy = TrainConfig(
        epochs=args.proxy_epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        max_batches=args.proxy_batches,
    )
    with console.status("searching") as status:
        result = search(
            dense,
            data,
            args.out,
            trials=args.trials,
            objectives=tuple(o.strip() for o in args.objectives.split(",")),
            target_range=(lo, hi),
            proxy=proxy,
            hardware=args.hardware,
            storage=args.storage,
            study_name=args.study_name,
            n_jobs=args.n_jobs,
            seed=args.seed,
            meter_device=meter_device_for("cpu"),
            log=lambda m: status.update(m),
        )
    table = Table(
        title=f"Pareto front ({len(result.front)} of {len(result.trials)} trials; "
        f"energy {result.energy_basis}; accuracy on validation)",
        title_justify="left",
    )
    for column in (
        "trial",
        "target",
        "criterion",
        "round_to",
        "val top-1",
        "energy J",
        "latency ms",
    ):
        table.add_column(column, justify="right")
    for t in sorted(result.front, key=lambda t: t["values"]["energy_j"]):
        mark = " ★" if t["number"] == result.knee else ""
        table.add_row(
            f"{t['number']}{mark}",
            f"{t['params']['target_energy']:.2f}",
            t["params"]["criterion"],
            str(t["params"]["round_to"]),
            f"{100 * t['values']['accuracy']:.2f} %",
            f"{t['values']['energy_j']:.4g}",
            f"{t['values']['latency_ms']:.3f}",
        )
    console.print(table)
    console.print(f"knee: trial {result.knee} (★) · wrote {args.out}/pareto.json, pareto.png")
    if args.finalize and result.knee is not None:
        _finalize(args, built, dense, data, result, console)
    return 0


def _finalize(args, built, dense, data, result, console: Console) -> None:
    from energyprune.pipeline.driver import run_and_write
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.report import run_table
    from energyprune.pipeline.run import RunConfig

    params = next(t["params"] for t in result.trials if t["number"] == result.knee)
    cfg = RunConfig(
        target_energy=params["target_energy"],
        steps=args.steps,
        max_acc_drop=args.max_acc_drop,
        train=TrainConfig(epochs=args.finetune_epochs, lr=args.lr, optimizer=args.optimizer),
        criterion=params["criterion"],
        strategy=params["strategy"],
        hardware=args.hardware,
        round_to=params["round_to"],
        seed=args.seed,
    )
    final = run_and_write(
        dense, data, cfg, Path(args.out) / "final", arch=built.name, log=console.print
    )
    if final is not None:
        console.print(run_table(final.report))


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a pruned model folder to ONNX",
        description="Rebuild a pruned model from DIR (plan.json + model.safetensors) and export "
        "it to ONNX with a dynamic batch dimension.",
    )
    p.add_argument("dir", help="folder written by `energyprune prune --out`")
    p.add_argument("--onnx", required=True, metavar="PATH", help="ONNX file to write")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace, console: Console) -> int:
    from energyprune.pruning.export import export_onnx, load

    model, plan = load(args.dir)
    export_onnx(model, plan.example_input(), args.onnx)
    console.print(f"wrote {args.onnx}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``energyprune`` argument parser (one sub-command per pipeline stage)."""
    parser = _Parser(prog="energyprune", description="Prune PyTorch models to an energy budget.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_profile(sub)
    _add_measure(sub)
    _add_calibrate(sub)
    _add_prune(sub)
    _add_export(sub)
    _add_demo(sub)
    _add_search(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``energyprune`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    console = Console(width=max(Console().width, 120) if sys.stdout.isatty() else 140)
    try:
        code = args.run(args, console)
    except EnergyPruneError as e:
        if args.debug:
            raise
        print(f"energyprune: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("energyprune: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
