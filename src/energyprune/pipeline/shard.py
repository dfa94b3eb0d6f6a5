"""FSDP2 for a model that does not fit one device: under ``torchrun``, with
``TrainConfig(shard=True)``, the trainer trains a sharded copy (PyTorch's ``fully_shard`` on
every decoder layer, then on the whole model) and writes the full weights back into the model
when it stops, so that everything after training (pricing, saving, the next cut) sees a plain
module. The frozen teacher is sharded the same way. On CPU this runs with the gloo backend.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ShardedCopy", "sharded"]


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The units sharded one by one: a decoder LM's layers; none for other models."""
    from energyprune.pruning.decoder import decoder_layers

    try:
        return list(decoder_layers(model))
    except Exception:  # not a decoder LM: the whole model is one unit
        return []


def sharded(model: nn.Module) -> nn.Module:
    """A sharded copy of ``model`` (``model`` itself is left as it is)."""
    from torch.distributed.fsdp import fully_shard

    twin = copy.deepcopy(model)
    for block in _blocks(twin):
        fully_shard(block)
    fully_shard(twin)
    return twin


class ShardedCopy:
    """``model`` and the sharded copy that trains in its place."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.copy = sharded(model).train(model.training)

    @torch.no_grad()
    def write_back(self) -> None:
        """The trained weights, gathered whole, into ``model``."""
        trained = dict(self.copy.named_parameters())
        for name, p in self.model.named_parameters():
            q = trained[name]
            p.copy_(q.full_tensor() if hasattr(q, "full_tensor") else q)
        buffers = dict(self.copy.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(buffers[name])
