"""Measured importance for the LM energy criterion: how much calibration loss each kind of cut
costs in each layer, so that layers, MLP channels and heads are compared in one real unit.

Block influence ranks layers well but says nothing about how a width cut compares with a layer
drop; a share-of-parameters prior is a guess. Here each layer gets three probes, each a mask on
the dense model (no copy):

* ``layer``: the layer passes its input through (a forward hook);
* ``mlp``: the least important half of its MLP channels read zero (a pre-hook on
  ``down_proj``), which is exactly what removing them does;
* ``heads``: the least important query head of every KV group reads zero (a pre-hook on
  ``o_proj``), exactly what removing one head per group does.

Each probe's importance is the rise of the caller's calibration loss over the unmasked model.
It may be negative: a cut that lowers calibration loss is the first to take. 3 x layers probes,
each one pass over the probe windows.

Losses of several cuts do not add up: two neighbouring layers may each be cheap to skip and
costly together. :func:`greedy_layers` re-measures: it skips layers one at a time, each round
the one whose skip (on top of those already skipped) raises the loss least, as SLEB does.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from energyprune.pruning.decoder import attention_layers, decoder_layers, head_channels

__all__ = ["PROBES", "Sensitivity", "greedy_layers", "loss_sensitivity"]


@dataclass(frozen=True)
class Sensitivity:
    """Calibration-loss rise (nats per token) per layer for each probe, and the base loss."""

    base: float
    layer: list[float]
    mlp: list[float]  # the least important half of the MLP channels
    heads: list[float]  # the least important query head of every group

    def to_dict(self) -> dict:
        return {
            "base_loss": self.base,
            "layer": self.layer,
            "mlp_half": self.mlp,
            "one_head_per_group": self.heads,
        }


def _zero_inputs(linear: nn.Linear, channels: torch.Tensor):
    mask = torch.ones(linear.in_features, dtype=linear.weight.dtype, device=linear.weight.device)
    mask[channels.to(mask.device)] = 0

    def hook(module, args):
        return (args[0] * mask, *args[1:])

    return linear.register_forward_pre_hook(hook)


def _skip(layer: nn.Module):
    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    return layer.register_forward_hook(hook, with_kwargs=True)


def _mlp_half(model: nn.Module, i: int, scores) -> object:
    down = decoder_layers(model)[i].mlp.down_proj
    return _zero_inputs(down, scores.mlp[i].argsort()[: down.in_features // 2])


def _one_head(model: nn.Module, i: int, scores) -> object:
    attn = attention_layers(model)[i]
    g, d = attn.group_size, attn.head_dim
    worst = scores.heads[i].view(attn.kv_heads, g).argmin(dim=1)
    heads = [k * g + int(j) for k, j in enumerate(worst)]
    return _zero_inputs(attn.module.o_proj, head_channels(heads, d))


#: probe name → hook that masks it in layer i (scores: :class:`~.lm_allocate.LMScores`)
PROBES: dict[str, Callable] = {
    "layer": lambda model, i, scores: _skip(decoder_layers(model)[i]),
    "mlp": _mlp_half,
    "heads": _one_head,
}


@contextmanager
def _masked(handle):
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def loss_sensitivity(
    model: nn.Module,
    scores,
    loss: Callable[[nn.Module], float],
    on_probe: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Every probe of every layer of ``model`` (left unchanged), priced by ``loss(model)``: the
    mean next-token loss on the caller's calibration windows. ``scores`` ranks channels and
    heads (Wanda scores of :class:`~.lm_allocate.LMScores`)."""
    n = len(decoder_layers(model))
    base = loss(model)
    found: dict[str, list[float]] = {name: [] for name in PROBES}
    total, done = n * len(PROBES), 0
    for i in range(n):
        for name, probe in PROBES.items():
            with _masked(probe(model, i, scores)):
                found[name].append(loss(model) - base)
            done += 1
            if on_probe:
                on_probe(done, total)
    return Sensitivity(base, found["layer"], found["mlp"], found["heads"])


@torch.no_grad()
def greedy_layers(
    model: nn.Module,
    loss: Callable[[nn.Module], float],
    count: int,
    shortlist: list[int],
    on_probe: Callable[[int, int], None] | None = None,
) -> list[int]:
    """``count`` layers of ``shortlist`` to drop, chosen one per round by the least loss with
    every layer chosen so far skipped too (``model`` is left unchanged)."""
    layers = decoder_layers(model)
    chosen: list[int] = []
    total = sum(len(shortlist) - r for r in range(count))
    done = 0
    for _ in range(min(count, len(shortlist))):
        handles = [_skip(layers[i]) for i in chosen]
        try:
            tried = {}
            for i in (i for i in shortlist if i not in chosen):
                with _masked(_skip(layers[i])):
                    tried[i] = loss(model)
                done += 1
                if on_probe:
                    on_probe(done, total)
        finally:
            for handle in handles:
                handle.remove()
        chosen.append(min(tried, key=tried.__getitem__))
    return chosen
