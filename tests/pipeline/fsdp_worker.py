"""Distils a tiny Llama for a few steps with the one trainer; run by tests/pipeline/test_fsdp.py
in one process, or under torchrun with FSDP2 (gloo), writing its losses and weights to argv[1].
"""

from __future__ import annotations

import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.recover import Teacher
from energyprune.pipeline.text import next_token_loss
from tests.tiny_lms import tiny_llama

GLOBAL_BATCH = 2


def main(out: str) -> None:
    distributed = torch.distributed.is_available() and "WORLD_SIZE" in __import__("os").environ
    world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    model = tiny_llama(2)
    teacher = Teacher(model)
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(ids), batch_size=GLOBAL_BATCH // world, shuffle=False)
    cfg = TrainConfig(steps=3, lr=1e-3, optimizer="adamw", weight_decay=0.0, distill_alpha=0.5,
                      distill_temperature=2.0, clip_norm=1.0, shard=distributed)  # fmt: skip
    losses: list[float] = []
    finetune(model, loader, cfg, loss=next_token_loss, teacher=teacher.module,
             on_batch=lambda e, i, n, loss: losses.append(loss))  # fmt: skip
    teacher.check()
    rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if rank0:
        weights = {n: p.detach().flatten()[:50].tolist() for n, p in model.named_parameters()}
        with open(out, "w") as f:
            json.dump({"losses": losses, "weights": weights}, f)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
