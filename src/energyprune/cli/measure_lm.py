"""`energyprune measure` for language models: a decode step (or a prefill) as a server runs it,
through the meter-window protocol; J per token when a meter is read, tokens/s always."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from energyprune.cli.progress import status
from energyprune.errors import ConfigError, EnergyPruneError
from energyprune.files import atomic_write_text, check_writable_file

if TYPE_CHECKING:
    from torch import nn

    from energyprune.energy.measurement.lm_decode import LMMeasurement, LMSetting
    from energyprune.energy.measurement.protocol import MeasurementProtocol

__all__ = ["add_lm_args", "is_measured_lm", "refuse_lm_flags", "run_lm"]

#: the profile the labelled estimate is priced on when no meter is read
ESTIMATE_ON = "h100-sxm"
#: the seed of the random weights an ``hf:`` config is built with
SEED = 0
_LM_FLAGS = ("phase", "batch", "context", "prompt", "workload", "seq_len")


def add_lm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "language models (smollm2-135m, a folder prune --out wrote, hf:PATH: a model folder, "
        "or a config.json built with random weights, seed 0)",
        "A decode step of --batch new tokens at --context cached tokens (a static KV cache "
        "filled by a real prefill, one slot rewritten each step), or a prefill of --batch x "
        "--prompt tokens: J per generated / prompt token. --batch-size is an alias of --batch. "
        "The old --seq-len (one pass without a cache) is gone: --phase prefill --prompt S.",
    )
    g.add_argument("--phase", metavar="decode|prefill", help="what one step is (default decode)")
    g.add_argument("--batch", type=int, metavar="B", help="sequences per step (1)")
    g.add_argument(
        "--context", type=int, metavar="L", help="decode: cached tokens per sequence (1024)"
    )
    g.add_argument("--prompt", type=int, metavar="P", help="prefill: tokens per prompt (1024)")
    g.add_argument("--workload", help=argparse.SUPPRESS)  # refused, with what to use instead
    g.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)  # refused, as above


def is_measured_lm(spec: str) -> bool:
    """A built-in LM, an LM folder, an ``hf:`` spec, or a path to a ``config.json``."""
    from energyprune.models.lms import is_lm

    return is_lm(spec) or (spec.endswith(".json") and Path(spec).is_file())


def refuse_lm_flags(args: argparse.Namespace) -> None:
    """An image model given a language model's flags: one line saying which and why."""
    given = [f"--{k.replace('_', '-')}" for k in _LM_FLAGS if getattr(args, k) is not None]
    if given:
        raise ConfigError(
            f"{given[0]} is for language models (smollm2-135m, hf:PATH, an LM folder); "
            f"{args.model} is an image model: set its batch with --batch-size"
        )


def lm_setting(args: argparse.Namespace) -> LMSetting:
    """The flags as a measured phase, every misuse refused before the model loads."""
    from energyprune.energy.measurement.lm_decode import LMSetting

    unused = {
        "--channels-last": args.channels_last,
        "--int8": args.int8,
        "--compile": args.compile,
        "--weights": args.weights,
        "--input-shape": args.input_shape,
    }
    for flag, given in unused.items():
        if given:
            raise ConfigError(
                f"{flag} is not for language models: drop it (--phase, --batch, --context and "
                "--prompt set the step)"
            )
    if args.workload is not None or args.seq_len is not None:
        flag = "--workload" if args.workload is not None else "--seq-len"
        raise ConfigError(
            f"{flag}: measure runs one phase: --phase decode --context L, or --phase prefill "
            "--prompt P (whole requests are priced by `energyprune profile --workload`)"
        )
    phase = args.phase or "decode"
    other = "prompt" if phase == "decode" else "context"
    if getattr(args, other) is not None:
        raise ConfigError(f"--{other} does not apply to --phase {phase}: drop it")
    if None not in (args.batch, args.batch_size) and args.batch != args.batch_size:
        raise ConfigError("--batch-size is an alias of --batch: pass one of them")
    length = args.context if phase == "decode" else args.prompt
    return LMSetting(
        phase=phase,
        batch=next((b for b in (args.batch, args.batch_size) if b is not None), 1),
        length=1024 if length is None else length,
        device=args.device or _default_device(),
        dtype=args.dtype,
        cuda_graph=args.cuda_graph,
    )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_lm_to_measure(spec: str) -> tuple[nn.Module, str]:
    """The model and where its weights come from: a built-in's package, a folder's
    safetensors, or (a config alone) random weights drawn from :data:`SEED`."""
    from energyprune.models.hf import build_hf, read_hf_config
    from energyprune.models.lms import BUILTIN_LMS, lm_folder
    from energyprune.pruning.lm_export import open_lm

    folder = lm_folder(spec)
    if spec in BUILTIN_LMS or (folder is not None and any(folder.glob("*.safetensors"))):
        loaded = open_lm(spec)
        return loaded.model, loaded.note
    model = build_hf(read_hf_config(spec if folder is None else str(folder)), seed=SEED)
    return model, (
        f"random weights (seed {SEED}) built from the config: the work is the model's, "
        "the values are not trained ones"
    )


def run_lm(args: argparse.Namespace, console: Console, protocol: MeasurementProtocol) -> int:
    """Load, measure, show, and write the row (``--json``, checked writable beforehand)."""
    from energyprune.energy.measurement.lm_decode import measure_lm
    from energyprune.reports.lm import lm_measurement_table

    setting = lm_setting(args)
    if args.json:
        check_writable_file(args.json, "--json")
    with status(console, f"loading {args.model}"):
        model, weights = load_lm_to_measure(args.model)
    console.print(f"weights: {weights}")
    name = args.model
    with status(console, f"measuring {name}") as update:
        m = measure_lm(
            model,
            setting,
            meter=None if args.no_meter else "auto",
            protocol=protocol,
            progress=lambda stage: update(f"measuring {name}: {stage}"),
        )
    estimate = None if m.result.measured else lm_estimate(model, m)
    console.print(lm_measurement_table(m, name, estimate))
    if not m.result.measured:
        console.print(f"energy: not measured ({m.result.unavailable_reason})")
    if args.json:
        row = {"model": args.model, "weights": weights, **m.to_dict(), "estimate": estimate}
        atomic_write_text(args.json, json.dumps(row, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def lm_estimate(model: nn.Module, m: LMMeasurement) -> dict[str, Any] | None:
    """The energy model's J per token for the measured phase on :data:`ESTIMATE_ON`, labelled
    as an estimate of that device (not the one measured); None if it cannot be priced."""
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import Decode, Prefill

    s = m.setting
    regime = Decode(s.batch, s.length) if s.phase == "decode" else Prefill(s.batch, s.length)
    try:
        lm = profile_lm(model, regime, ESTIMATE_ON, m.result.dtype)
    except EnergyPruneError:
        return None
    return {
        "estimated": True,
        "hardware": lm.hardware,
        "dtype": lm.dtype,
        "basis": regime.basis,
        "joules_per_token": lm.energy_j,
    }
