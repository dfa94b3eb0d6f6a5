"""The command, date and machine every benchmark JSON starts with (docs/benchmarks.md quotes
them beside each figure)."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch


def provenance(script: str, argv: list[str] | None, device: str = "cpu") -> dict[str, str]:
    """``{"command", "date", "machine"}`` for a run of ``script`` (its ``__file__``)."""
    return {
        "command": f"python benchmarks/{Path(script).name} " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, device {device}",
    }
