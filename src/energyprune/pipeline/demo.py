"""``energyprune demo``: train a small CNN on digits, prune it to half its estimated energy with
fine-tuning and an accuracy guardrail, and write the report — in about a minute on 2 CPU cores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from energyprune.models.architectures import digits_cnn
from energyprune.pipeline.data import load_data
from energyprune.pipeline.driver import run_and_write
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.run import Hooks, RunConfig, RunResult

__all__ = ["DEMO_CONFIG", "demo"]

DEMO_CONFIG = RunConfig(
    target_energy=0.5,
    steps=3,
    schedule="cubic",
    max_acc_drop=1.0,
    train=TrainConfig(epochs=6, lr=2e-3, optimizer="adamw", weight_decay=1e-4),
    final_epochs=10,
)


def demo(
    out: str | Path = "demo-output",
    seed: int = 0,
    log: Callable[[str], None] = print,
    on_batch: Callable[[int, int, int, float], None] = lambda *a: None,
    on_step: Callable[[int, int], None] = lambda *a: None,
    on_pretrain_batch: Callable[[int, int, int, float], None] | None = None,
) -> RunResult | None:
    """Train ``digits_cnn`` on scikit-learn's digits, then prune → fine-tune → evaluate
    (``on_pretrain_batch``, default ``on_batch``, reports the dense training)."""
    torch.manual_seed(seed)
    data = load_data("digits", batch_size=64, seed=seed)
    model = digits_cnn()
    log("training digits_cnn on scikit-learn digits (dense baseline)")
    train = TrainConfig(epochs=30, lr=3e-3, optimizer="adamw", weight_decay=1e-4, seed=seed)
    finetune(model, data.train, train, on_batch=on_pretrain_batch or on_batch)
    cfg = RunConfig(**{**DEMO_CONFIG.__dict__, "seed": seed})
    hooks = Hooks(log, on_batch, on_step)
    return run_and_write(model, data, cfg, out, arch="digits_cnn", hooks=hooks)
