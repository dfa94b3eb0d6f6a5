"""Fine-tuning: SGD or AdamW with a cosine schedule, mixed precision on GPU, seeded, stoppable,
optionally distilled from the dense model. The one trainer for every kind of model: the batch
loss comes from the model's kind (:data:`BatchLoss`; an image classifier's by default).

Each call reseeds torch and the loader's shuffling from ``seed``, so a step re-run after a crash
reproduces the uninterrupted run. Ctrl-C (SIGINT) sets a flag checked after every batch: the
call returns early and the caller keeps the last complete checkpoint. Under ``torchrun``
(``WORLD_SIZE`` set) the model is wrapped in DistributedDataParallel with a distributed sampler.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from energyprune.errors import ConfigError
from energyprune.models.placement import placement, to_model
from energyprune.pipeline.recover import distillation_loss

__all__ = [
    "BatchLoss",
    "DuringTraining",
    "OnBatch",
    "StopFlag",
    "TrainConfig",
    "classifier_loss",
    "distributed",
    "finetune",
    "is_main_process",
]

OPTIMIZERS = ("sgd", "adamw")
#: called after every optimiser step with (epoch, batch index, batches per epoch, loss)
OnBatch = Callable[[int, int, int, float], None]


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
    distill_alpha: float = 0.9  # weight of the soft (teacher) term when a teacher is given
    distill_temperature: float = 4.0
    steps: int | None = None  # optimiser steps in all, cycling over the loader (not epochs)
    clip_norm: float | None = None  # clip the gradients' global norm to this
    shard: bool = False  # under torchrun: FSDP2 (pipeline/shard.py) instead of DDP

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'"
            )
        if self.epochs < 0 or self.lr <= 0:
            raise ConfigError(f"need epochs >= 0 and lr > 0, got {self.epochs}, {self.lr}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigError(f"max_batches must be >= 1 (or unset), got {self.max_batches}")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps must be >= 0 (or unset), got {self.steps}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"clip_norm must be > 0 (or unset), got {self.clip_norm}")
        if not 0 <= self.distill_alpha <= 1 or self.distill_temperature <= 0:
            raise ConfigError(
                "need 0 <= distill_alpha <= 1 and distill_temperature > 0, got "
                f"{self.distill_alpha}, {self.distill_temperature}"
            )


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


#: a kind's loss on one batch (already on the model's device): (the module to call, which may
#: be a DDP wrapper, the batch, the frozen teacher or None, the training settings)
BatchLoss = Callable[[nn.Module, Any, "nn.Module | None", TrainConfig], torch.Tensor]


def classifier_loss(
    forward: nn.Module, batch: Any, teacher: nn.Module | None, cfg: TrainConfig
) -> torch.Tensor:
    """Cross-entropy on ``(x, y)``, or :func:`distillation_loss` with a teacher."""
    x, y = batch
    logits = forward(x)
    if teacher is None:
        return nn.functional.cross_entropy(logits, y)
    with torch.no_grad():
        soft = teacher(x)  # once per batch, shared by every loss term
    return distillation_loss(logits, soft, y, cfg.distill_alpha, cfg.distill_temperature)


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


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    """Cosine schedule from ``cfg.lr`` to 0 over ``total`` optimiser steps (closed form, so a
    run that swaps its model mid-way keeps its place in the schedule)."""
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


class _Trainer:
    """The model being trained, its optimiser and (under torchrun) its DDP wrapper."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.use(model)

    def use(self, model: nn.Module) -> None:
        """Train ``model`` from now on (a fresh optimiser: its parameters may be new)."""
        self.model = model.train()
        self.sharded = None
        if self.cfg.shard and torch.distributed.is_initialized():
            from energyprune.pipeline.shard import ShardedCopy

            self.sharded = ShardedCopy(model)
            self.optimizer = _optimizer(self.sharded.copy, self.cfg)
            self.forward = self.sharded.copy
            return
        self.optimizer = _optimizer(model, self.cfg)
        self.forward: nn.Module = model
        if torch.distributed.is_initialized():
            device = next(model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def step(self, batch: Any, loss_fn: BatchLoss, teacher: nn.Module | None, lr: float):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if _device(batch).type == "cuda"
            else contextlib.nullcontext()
        )
        with autocast:
            loss = loss_fn(self.forward, batch, teacher, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.forward.parameters(), self.cfg.clip_norm)
        self.optimizer.step()
        return loss

    def finish(self) -> nn.Module:
        """The trained model in eval mode (a sharded copy's weights written back first)."""
        if self.sharded is not None:
            self.sharded.write_back()
        return self.model.eval()


def _mean_over_ranks(loss: torch.Tensor) -> float:
    """The batch loss averaged over every rank (the global batch's, when ranks hold equal
    shares of it); the rank's own outside torchrun."""
    value = loss.detach().float().clone()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return float(value)


def _device(batch: Any) -> torch.device:
    """The device of a batch's first tensor (CPU when it holds none)."""
    if isinstance(batch, torch.Tensor):
        return batch.device
    for item in batch if isinstance(batch, (list, tuple)) else ():
        if isinstance(item, torch.Tensor):
            return item.device
    return torch.device("cpu")


def _seeded_loader(loader: DataLoader, cfg: TrainConfig):
    """The loader, seeded; under torchrun, each rank's share of it (shuffled only when the
    loader shuffles) and the sampler that deals it."""
    if distributed():
        shuffled = isinstance(loader.sampler, torch.utils.data.RandomSampler)
        sampler = torch.utils.data.DistributedSampler(
            loader.dataset, shuffle=shuffled, seed=cfg.seed
        )
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler), sampler
    if loader.generator is not None:
        loader.generator.manual_seed(cfg.seed)
    return loader, None


def _frozen_teacher(teacher: nn.Module | None, model: nn.Module, cfg: TrainConfig):
    """The teacher in eval mode (sharded like the student under FSDP2)."""
    if teacher is model:
        raise ConfigError("the teacher is the model being trained: pass a frozen copy (Teacher)")
    if teacher is None:
        return None
    teacher.eval()
    if cfg.shard and torch.distributed.is_initialized():
        from energyprune.pipeline.shard import sharded

        return sharded(teacher)  # frozen, as the student is sharded
    return teacher


@dataclass(frozen=True)
class DuringTraining:
    """What runs inside training. ``before(model, step, total)`` is called before optimiser
    steps 0, ``every``, 2·``every``, … and returns the model to train from there (the gradual
    schedule prunes inside training this way); the caller keeps the last one it returned.
    ``after_step(model)`` runs after every optimiser step, without gradients (sparse models
    re-apply their masks there)."""

    every: int = 0
    before: Callable[[nn.Module, int, int], nn.Module] | None = None
    after_step: Callable[[nn.Module], None] | None = None


def finetune(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    *,
    loss: BatchLoss = classifier_loss,
    teacher: nn.Module | None = None,
    stop: StopFlag | None = None,
    on_batch: OnBatch = lambda epoch, i, n, loss: None,
    during: DuringTraining = DuringTraining(),
) -> bool:
    """Train ``model`` in place for ``cfg.epochs`` (or ``cfg.steps`` optimiser steps); returns
    False if stopped early.

    ``loss`` is the model kind's batch loss; with a ``teacher`` (the dense model) it distils.
    The teacher stays in eval mode without gradients and is never changed. ``during`` runs
    inside the loop (:class:`DuringTraining`).
    """
    every, on_every, after_step = during.every, during.before, during.after_step
    if cfg.epochs == 0 or cfg.steps == 0 or len(loader) == 0:
        return True
    torch.manual_seed(cfg.seed)
    where = placement(model)
    loader, sampler = _seeded_loader(loader, cfg)
    teacher = _frozen_teacher(teacher, model, cfg)
    if cfg.shard and on_every is not None:
        raise ConfigError(
            "a sharded (FSDP2) fine-tune cannot cut inside itself: drop --schedule gradual"
        )
    trainer = _Trainer(model, cfg)
    per_epoch = len(loader) if cfg.max_batches is None else min(cfg.max_batches, len(loader))
    total = cfg.steps if cfg.steps is not None else cfg.epochs * per_epoch
    done, epoch = 0, 0
    while done < total:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i >= per_epoch or done >= total:
                break
            if on_every is not None and every > 0 and done % every == 0:
                swapped = on_every(trainer.model, done, total)
                if swapped is not trainer.model:
                    trainer.use(swapped)
            batch = to_model(batch, where, non_blocking=True)
            value = trainer.step(batch, loss, teacher, _lr(cfg, done, total))
            if after_step is not None:
                with torch.no_grad():
                    after_step(trainer.model)
            done += 1
            on_batch(epoch, i, min(per_epoch, total), _mean_over_ranks(value))
            if stop is not None and stop.requested:
                trainer.finish()
                return False
        epoch += 1
    trainer.finish()
    return True
