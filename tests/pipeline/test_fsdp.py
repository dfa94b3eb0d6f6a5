"""FSDP2 in the one trainer: under torchrun with two processes (gloo, CPU), distilling a tiny
Llama sharded per decoder layer, with its teacher sharded too, gives the losses and weights of
one process holding the whole model and the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([*argv, str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_fsdp2_under_torchrun_distils_as_one_process(tmp_path):
    worker = "tests/pipeline/fsdp_worker.py"
    one = _run([sys.executable, worker], tmp_path / "one.json")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = _run([*torchrun, "--nproc_per_node", "2", worker], tmp_path / "two.json")
    assert len(one["losses"]) == len(two["losses"]) == 3
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert abs(a - b) <= 1e-4
    for name, values in one["weights"].items():
        diff = max(abs(x - y) for x, y in zip(values, two["weights"][name], strict=True))
        assert diff <= 1e-4, name
