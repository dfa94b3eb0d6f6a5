"""Command line: parse → call the library → render. Errors a user can fix exit 2 in one line.

One module per command group; this file wires them (the whole surface in one place).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from collections.abc import Sequence

from rich.console import Console

from energyprune.cli import calibrate, demo, export, measure, profile, prune, quantize, search
from energyprune.cli.common import EXIT_USAGE, Parser, in_flags
from energyprune.errors import EnergyPruneError
from energyprune.files import check_writable, check_writable_file

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``energyprune`` argument parser (one sub-command per pipeline stage)."""
    parser = Parser(prog="energyprune", description="Prune PyTorch models to an energy budget.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    profile.add_profile(sub)
    measure.add_measure(sub)
    calibrate.add_calibrate(sub)
    prune.add_prune(sub)
    export.add_export(sub)
    demo.add_demo(sub)
    search.add_search(sub)
    quantize.add_quantize(sub)
    return parser


#: command → (argument, flag, "folder" | "file") outputs, checked before any work starts
_OUTPUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "prune": (("out", "--out", "folder"),),
    "search": (("out", "--out", "folder"),),
    "quantize": (("out", "--out", "folder"),),
    "demo": (("out", "--out", "folder"),),
    "calibrate": (("out", "--out", "file"), ("report", "--report", "file")),
    "profile": (("json", "--json", "file"), ("plot", "--plot", "file")),
    "measure": (("json", "--json", "file"),),
    "export": (("onnx", "--onnx", "file"), ("out", "--out", "file")),
}


def _check_outputs(args: argparse.Namespace) -> None:
    """A place we cannot write is refused before a long run, not after it."""
    for name, flag, kind in _OUTPUTS.get(args.command, ()):
        value = getattr(args, name, None)
        if value:
            (check_writable if kind == "folder" else check_writable_file)(value, flag)


_NOISY_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension", "torch.export")
_NOISY_WARNINGS = ("torch_pruning", "torchao", "torch._inductor", "torch.export", "torch._export")


def _quiet_library_chatter() -> None:
    """Library warnings a user cannot act on (torchao's quantizer annotating, Inductor's
    lowering, export deserialisation) stay out of the output; --debug shows them."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", module=rf"{re.escape(module)}(\..*)?$")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``energyprune`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    console = Console(width=max(Console().width, 120) if sys.stdout.isatty() else 140)
    if args.debug:  # the library's own reasons (e.g. a trace that fell back) on stderr
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("energyprune").setLevel(logging.DEBUG)
    else:
        _quiet_library_chatter()
    try:
        _check_outputs(args)
        code = args.run(args, console)
    except EnergyPruneError as e:
        if args.debug:
            raise
        print(f"energyprune: error: {in_flags(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("energyprune: interrupted", file=sys.stderr)
        return 130
    return code
