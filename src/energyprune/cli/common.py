"""Shared CLI pieces: model arguments, model loading, errors, progress callbacks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from energyprune.errors import ConfigError, first_line
from energyprune.models.zoo import (
    BUILTIN_MODELS,
    BuiltModel,
    build_model,
    load_weights,
    parse_input_shape,
)

if TYPE_CHECKING:
    from torch import nn

    from energyprune.pipeline.data import Data
    from energyprune.pruning.plan import PruningPlan

__all__ = [
    "EXIT_USAGE",
    "FLAGS",
    "Parser",
    "add_model_args",
    "add_val_from",
    "fraction",
    "in_flags",
    "load_data_with_bar",
    "load_model",
    "load_source",
    "model_help",
    "run_with_progress",
    "shape_error",
    "verdict_colour",
]

EXIT_USAGE = 2

#: settings the library validates → the flag that sets them, so an error names what was typed
FLAGS = {
    "target_energy": "--target-energy",
    "max_joules": "--max-joules",
    "max_layer_ratio": "--max-layer-ratio",
    "round_to": "--round-to",
    "sparsity_scope": "--sparsity-scope",
    "max_acc_drop": "--max-acc-drop",
    "bn_batches": "--bn-batches",
    "score_batches": "--score-batches",
    "distill_alpha": "--distill-alpha",
    "distill_temperature": "--distill-temperature",
    "final_epochs": "--final-epochs",
    "max_batches": "--max-batches",
}
_FLAG_WORDS = re.compile(r"\b(" + "|".join(FLAGS) + r")\b")


def in_flags(message: str) -> str:
    """A library message in the command line's words (``target_energy`` → ``--target-energy``)."""
    return _FLAG_WORDS.sub(lambda m: FLAGS[m.group(1)], message)


def fraction(what: str = "a fraction") -> Callable[[str], float]:
    """An argparse type for a value in (0, 1]; a percentage gets "did you mean 0.5?" (argparse
    names the flag before the message)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes {what}, e.g. 0.5; got '{text}'") from None
        if 1 < value <= 100:
            raise argparse.ArgumentTypeError(
                f"is {what} in (0, 1], got {text}: did you mean {value / 100:g}?"
            )
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"is {what} in (0, 1], got {text}")
        return value

    return parse


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"energyprune: error: {message} (see '{self.prog} --help')\n")


def model_help(folders: bool = False) -> str:
    """MODEL's help: every kind of spec ``build_model`` takes (and saved folders where read)."""
    text = (
        f"a built-in ({', '.join(BUILTIN_MODELS)}), a torchvision classification name "
        "(resnet50), package.module:factory, or one torch.nn constructor ('Conv2d(3, 16, 3)')"
    )
    return text + (", or a folder written by `prune --out` / `quantize --out`" if folders else "")


def add_model_args(p: argparse.ArgumentParser, folders: bool = False) -> None:
    p.add_argument("model", help=model_help(folders))
    p.add_argument("--weights", help="safetensors file, shard index JSON, or weights-only .pt")
    p.add_argument(
        "--input-shape",
        help="e.g. 1,3,224,224 (default: 1,3,32,32 for CIFAR built-ins, else 1,3,224,224)",
    )


def add_val_from(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--val-from",
        choices=("train", "test"),
        default="train",
        help="validation split (guardrail, calibration): 'train' carves 10%% of train; 'test' "
        "takes a fixed half of test, the report's test being the other half: use it for a "
        "model trained on all of train (e.g. the CIFAR fixtures)",
    )


def load_data_with_bar(console: Console, args: argparse.Namespace, **kwargs) -> Data:
    """``load_data`` for ``--data`` / ``--batch-size`` / ``--val-from``, with progress over the
    first decode of an image archive (~20 s for CIFAR-10; later runs read the cache)."""
    from energyprune.cli.progress import Progress
    from energyprune.pipeline.data import load_data

    with Progress(console) as bar:

        def progress(done: int, total: int) -> None:
            bar.on_items(done, total, "decoding images once (cached for later runs)")

        return load_data(
            args.data,
            batch_size=args.batch_size,
            val_from=args.val_from,
            progress=progress,
            **kwargs,
        )


def load_model(args: argparse.Namespace) -> tuple[BuiltModel, tuple[int, ...]]:
    built = build_model(args.model)
    if args.weights:
        load_weights(built.model, args.weights)
    shape = parse_input_shape(args.input_shape) if args.input_shape else built.input_shape
    return built, shape


def load_source(
    args: argparse.Namespace,
) -> tuple[nn.Module, str, tuple[int, ...], PruningPlan | None]:
    """MODEL as a spec (with --weights) or a folder written by `prune --out` / `quantize --out`
    (its float model): (model, architecture name, input shape, the folder's plan or None)."""
    folder = Path(args.model)
    if not folder.is_dir():
        built, shape = load_model(args)
        return built.model, built.name, shape, None
    from energyprune.pruning.export import load

    model, plan = load(folder)
    shape = parse_input_shape(args.input_shape) if args.input_shape else tuple(plan.input_shape)
    return model, plan.arch["name"], shape, plan


def verdict_colour(recommended: bool | None) -> str:
    """Colour of an int8 verdict: recommended, not recommended, or too noisy to judge (None)."""
    return {True: "green", False: "yellow"}.get(recommended, "red")


def shape_error(name: str, shape: tuple[int, ...], e: Exception) -> ConfigError:
    return ConfigError(
        f"model '{name}' failed on an input of shape {','.join(map(str, shape))} "
        f"({first_line(e)}); pass the shape it expects with --input-shape"
    )


def run_with_progress(
    console: Console,
    args: argparse.Namespace,
    model: nn.Module,
    data: Any,
    cfg: Any,
    arch: str,
    on_bar: Callable[[Any], None] | None = None,
):
    """The one run loop over ``--seeds`` with a progress bar (``on_bar(bar)`` wires more of
    it); None when it was stopped (Ctrl-C), after saying how to go on."""
    from energyprune.cli.progress import Progress
    from energyprune.pipeline.driver import run_and_write
    from energyprune.pipeline.run import Hooks

    with Progress(console, args.steps) as bar:
        if on_bar is not None:
            on_bar(bar)
        result = run_and_write(
            model,
            data,
            cfg,
            args.out,
            arch=arch,
            resume=args.resume,
            device=args.device,
            hooks=Hooks(bar.log, bar.on_batch, bar.on_step),
        )
    if result is None:
        console.print("stopped: the last completed step is checkpointed; rerun with --resume")
    return result
