"""Which `prune` flags each kind of model takes, and each kind's defaults for the shared ones.

A flag the chosen kind does not use is refused in one line (exit 2) instead of being ignored.
Shared flags whose sensible value differs per kind default to None on the parser and are
filled here from the library's own defaults (the dataclasses), so the CLI and Python agree.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from energyprune.errors import ConfigError

__all__ = [
    "IMAGE",
    "KIND_NAMES",
    "LM",
    "ONLY",
    "PER_KIND_HELP",
    "fill_kind_defaults",
    "record_flags",
    "refuse_flags",
    "refuse_for_kind",
    "refuse_idle_image_flags",
]

IMAGE, LM = "image", "lm"
KIND_NAMES = {IMAGE: "an image classifier", LM: "a language model"}

#: flags (argparse dests) only one kind takes
ONLY: dict[str, tuple[str, ...]] = {
    IMAGE: (
        "weights",
        "input_shape",
        "granularity",
        "criterion",
        "strategy",
        "max_layer_ratio",
        "ignore",
        "prune_residual",
        "nm",
        "max_joules",
        "bn_batches",
        "candidates",
        "score_batches",
        "finetune_epochs",
        "max_batches",
        "final_epochs",
        "max_acc_drop",
        "optimizer",
        "val_from",
        "quantize",
        "ddp",
        "no_qat",
        "eager",
        "measure_batch",
        "seconds",
        "windows",
    ),
    LM: (
        "regime",
        "lm_method",
        "finetune_steps",
        "max_ppl_rise",
        "seq_len",
        "eval_windows",
        "calib_windows",
        "probe_windows",
        "max_joules_per_token",
        "lm_lr",
        "fsdp",
    ),
}

#: what each kind takes instead, for the one-line refusal
_INSTEAD = {
    "max_joules": "--max-joules-per-token",
    "max_acc_drop": "--max-ppl-rise",
    "finetune_epochs": "--finetune-steps",
    "max_ppl_rise": "--max-acc-drop",
    "finetune_steps": "--finetune-epochs",
    "max_joules_per_token": "--max-joules",
}


def _defaults() -> dict[str, dict[str, Any]]:
    """dest → {kind: default}, read from the library's dataclasses."""
    from energyprune.pipeline.config import RunConfig
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.lm_prune import LMPruneConfig
    from energyprune.pruning.spec import PruneSpec

    def of(cls: type, name: str) -> Any:
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    return {
        "hardware": {IMAGE: of(PruneSpec, "hardware"), LM: of(LMPruneConfig, "hardware")},
        "lr": {IMAGE: of(TrainConfig, "lr"), LM: of(LMPruneConfig, "lr")},
        "distill_alpha": {IMAGE: of(TrainConfig, "distill_alpha"), LM: of(LMPruneConfig, "alpha")},
        "distill_temperature": {
            IMAGE: of(TrainConfig, "distill_temperature"),
            LM: of(LMPruneConfig, "temperature"),
        },
        "steps": {IMAGE: of(RunConfig, "steps"), LM: 1},
        "round_to": {IMAGE: None, LM: of(LMPruneConfig, "round_to")},
        "batch_size": {IMAGE: 128, LM: of(LMPruneConfig, "batch_size")},
    }


#: the help text's statement of each per-kind default (kept beside the table it describes)
PER_KIND_HELP = {
    "hardware": "default: horowitz-45nm for images, h100-sxm for language models",
    "lr": "peak learning rate, cosine (default: 0.01 for images, 5e-05 for language models)",
    "distill_alpha": "weight of the teacher's soft targets (default: 0.9 images, 0.5 LMs)",
    "distill_temperature": "softmax temperature (default: 4 for images, 2 for LMs)",
    "steps": "pruning steps toward the target (default: 3 for images, 1 for LMs)",
    "round_to": "keep widths multiples of N (default: the profile's channel_multiple for "
    "images, 32 MLP channels for LMs)",
    "batch_size": "training batch size (default: 128 images, 1 window for LMs)",
}


def record_flags(p: argparse.ArgumentParser) -> None:
    """Remember every option's flag and default on the namespace, for :func:`resolve_for_kind`."""
    flags = {a.dest: (a.option_strings[0], a.default) for a in p._actions if a.option_strings}
    p.set_defaults(_flags=flags)


def refuse_for_kind(args: argparse.Namespace, kind: str) -> None:
    """Refuse, in one line, a flag ``kind`` does not use (the other kind's)."""
    refuse_flags(args, ONLY[LM if kind == IMAGE else IMAGE], kind)
    if kind == LM and args.schedule == "gradual":
        raise ConfigError(
            "--schedule gradual cuts inside an image model's fine-tune; a language model takes "
            "cubic or linear steps: drop it"
        )


def fill_kind_defaults(args: argparse.Namespace, kind: str, console: Console) -> None:
    """Fill the per-kind defaults of the shared flags; map deprecated names."""
    if kind == LM and args.lm_lr is not None:
        console.print(
            "[yellow]note:[/] --lm-lr is deprecated and goes in the next release: use --lr"
        )
        if args.lr is None:
            args.lr = args.lm_lr
    for dest, per_kind in _defaults().items():
        if getattr(args, dest) is None:
            setattr(args, dest, per_kind[kind])


@dataclass(frozen=True)
class _Needs:
    """An image flag that only acts beside another: ``holds(args)`` says it does."""

    dest: str
    holds: Callable[[argparse.Namespace], bool]
    why: str


_INT8 = ("no_qat", "eager", "measure_batch", "seconds", "windows")
#: flags of the fine-tuning pipeline: a prune without --data is one cut, with no steps to set
_PIPELINE = (
    "steps",
    "schedule",
    "finetune_epochs",
    "max_batches",
    "final_epochs",
    "max_acc_drop",
    "optimizer",
    "lr",
    "batch_size",
    "val_from",
    "seed",
    "seeds",
    "device",
    "resume",
    "ddp",
    "bn_batches",
    "distill",
    "distill_alpha",
    "distill_temperature",
    "candidates",
    "score_batches",
)
_ONLY_WITH = (
    _Needs(
        "input_shape",
        lambda a: not a.data,
        "--input-shape is for a prune without --data (the data gives the shape): drop it",
    ),
    _Needs(
        "nm",
        lambda a: a.granularity == "nm",
        "--nm sets the pattern of --granularity nm: drop it, or add --granularity nm",
    ),
    *(
        _Needs(
            dest,
            lambda a: a.quantize is not None,
            f"--{dest.replace('_', '-')} sets the int8 step: add --quantize int8 or drop it",
        )
        for dest in _INT8
    ),
    *(
        _Needs(
            dest,
            lambda a: bool(a.data),
            f"--{dest.replace('_', '-')} sets the fine-tuning pipeline, which runs with "
            "--data: add --data or drop it",
        )
        for dest in _PIPELINE
    ),
)


def refuse_idle_image_flags(args: argparse.Namespace) -> None:
    """An image flag given where nothing reads it is one line, not a silent no-op."""
    flags: dict[str, tuple[str, Any]] = args._flags
    for rule in _ONLY_WITH:
        if getattr(args, rule.dest) != flags[rule.dest][1] and not rule.holds(args):
            raise ConfigError(rule.why)


def refuse_flags(args: argparse.Namespace, dests: tuple[str, ...], kind: str) -> None:
    """One line for the first of ``dests`` given a non-default value: ``kind`` does not use
    it."""
    flags: dict[str, tuple[str, Any]] = args._flags
    for dest in dests:
        option, default = flags[dest]
        if getattr(args, dest) != default:
            instead = f"; use {_INSTEAD[dest]}" if dest in _INSTEAD else ""
            raise ConfigError(
                f"{option} does nothing for {KIND_NAMES[kind]} ('{args.model}'): drop it{instead}"
            )
