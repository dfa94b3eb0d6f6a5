"""The pipeline runs wherever the model is: another dtype on the CPU (float64) fails exactly as
another device would, so these CPU tests catch any call site that makes a CPU float32 input
instead of going through ``models.placement``. The ``gpu`` twin runs the same on CUDA."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from energyprune.models.placement import example_input, placement, to_model
from energyprune.pipeline.driver import run_and_write
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pipeline.run import QUIET, RunConfig
from energyprune.pipeline.search import search

QUICK = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw", weight_decay=1e-4, max_batches=3)
ARMS = {
    "one-shot": RunConfig(target_energy=0.6, steps=1, train=QUICK, max_acc_drop=100.0),
    "gradual": RunConfig(
        target_energy=0.6, steps=1, schedule="gradual", train=QUICK, max_acc_drop=100.0
    ),
    "candidates": RunConfig(
        target_energy=0.6, steps=1, train=QUICK, max_acc_drop=100.0, candidates=2
    ),
}


def _moved(model: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    return copy.deepcopy(model).to(device, dtype)


def test_helper_puts_inputs_where_the_model_is():
    model = torch.nn.Linear(3, 2).double()
    assert placement(model).dtype == torch.float64
    assert example_input(model, (4, 3)).dtype == torch.float64
    x, y = to_model((torch.randn(2, 3), torch.tensor([1, 0])), model)
    assert x.dtype == torch.float64 and y.dtype == torch.int64  # labels keep their dtype
    assert model(x).shape == (2, 2)


def _pipeline(trained_digits, tmp_path, device: str, dtype: torch.dtype, max_batches: int):
    dense, data = trained_digits
    for name, cfg in ARMS.items():
        cfg = replace(cfg, train=replace(cfg.train, max_batches=max_batches))
        model = _moved(dense, device, dtype)
        result = run_and_write(
            model, data, cfg, tmp_path / name, arch="digits_cnn", device=device, hooks=QUIET
        )
        assert result is not None and result.plan is not None, name
        assert placement(result.model).dtype == dtype, name  # nothing was cast back to fp32
        assert placement(result.model).device.type == device, name
        assert result.report["after"]["energy_j"] < result.report["before"]["energy_j"], name
    proxy = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw", max_batches=2)
    found = search(
        _moved(dense, device, dtype),
        data,
        tmp_path / "search",
        trials=2,
        proxy=proxy,
        objectives=("accuracy", "energy"),
    )
    assert len(found.trials) == 2


def test_pipeline_runs_on_a_float64_model(trained_digits, tmp_path):
    _pipeline(trained_digits, tmp_path, "cpu", torch.float64, max_batches=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pipeline_runs_on_cuda(trained_digits, tmp_path):
    _pipeline(trained_digits, tmp_path, "cuda", torch.float32, max_batches=20)
