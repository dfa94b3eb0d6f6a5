"""Fine-tuning: SGD or AdamW with a cosine schedule, mixed precision on GPU, seeded, stoppable.

Each call reseeds torch and the loader's shuffling from ``seed``, so a step re-run after a crash
reproduces the uninterrupted run. Ctrl-C (SIGINT) sets a flag checked after every batch: the
call returns early and the caller keeps the last complete checkpoint. Under ``torchrun``
(``WORLD_SIZE`` set) the model is wrapped in DistributedDataParallel with a distributed sampler.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from energyprune.errors import ConfigError

__all__ = ["StopFlag", "TrainConfig", "distributed", "finetune", "is_main_process"]

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings (lr is the peak of the cosine schedule)."""

    epochs: int = 1
    lr: float = 0.01
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    seed: int = 0
    max_batches: int | None = None  # per epoch: a proxy budget for searches

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'"
            )
        if self.epochs < 0 or self.lr <= 0:
            raise ConfigError(f"need epochs >= 0 and lr > 0, got {self.epochs}, {self.lr}")


class StopFlag:
    """Set by SIGINT while installed: fine-tuning stops after the current batch."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum, frame) -> None:
            self.requested = True

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, nothing to restore
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def distributed() -> bool:
    """True under torchrun (initialises the process group once)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return True


def is_main_process() -> bool:
    """True outside torchrun and on rank 0: the one process that writes files."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def finetune(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    *,
    stop: StopFlag | None = None,
    on_batch: Callable[[int, int, int, float], None] = lambda epoch, i, n, loss: None,
) -> bool:
    """Train ``model`` in place for ``cfg.epochs``; returns False if stopped early."""
    if cfg.epochs == 0:
        return True
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    train_model: nn.Module = model
    sampler = None
    if distributed():
        sampler = torch.utils.data.DistributedSampler(loader.dataset, seed=cfg.seed)
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler)
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    elif loader.generator is not None:
        loader.generator.manual_seed(cfg.seed)
    optimizer = _optimizer(model, cfg)
    per_epoch = len(loader) if cfg.max_batches is None else min(cfg.max_batches, len(loader))
    total = cfg.epochs * per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    model.train()
    for epoch in range(cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i >= per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                loss = nn.functional.cross_entropy(train_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            on_batch(epoch, i, per_epoch, loss.item())
            if stop is not None and stop.requested:
                model.eval()
                return False
    model.eval()
    return True
