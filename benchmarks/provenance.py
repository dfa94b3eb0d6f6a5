"""The command, date and machine every benchmark JSON starts with (docs/benchmarks.md quotes
them beside each figure)."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def commit() -> str:
    """The checkout's short commit, ``+dirty`` when tracked files other than the results
    differ from it (a resumable benchmark rewrites its own JSON as it goes)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "-uno", "--", ".", ":!benchmarks/results")
    return head + ("+dirty" if changed else "")


def provenance(script: str, argv: list[str] | None, device: str = "cpu") -> dict[str, str]:
    """``{"command", "date", "machine", "commit"}`` for a run of ``script`` (its
    ``__file__``)."""
    return {
        "command": f"python benchmarks/{Path(script).name} " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, device {device}",
        "commit": commit(),
    }
