"""Wanda (Sun et al., 2023): unstructured and N:M sparsity of a decoder's linear layers from
calibration activations, no retraining. A weight's score is |W_ij| x ||X_j||_2 (its input
channel's activation norm on calibration text), compared within its output row: the lowest
``sparsity`` of each row (unstructured), or all but the best N of every M consecutive inputs (N:M)
become zero. The LM head and embeddings are left dense, as in the paper. Layers are pruned in
order, as the paper does: each layer's activations come from the model whose earlier layers are
already pruned (one pass of the calibration windows per layer).

What it saves depends on the runtime: nothing on a profile without sparse kernels (the zeros
are multiplied and moved like any weight), and on a profile that declares ``sparse_kernels:
["2:4"]`` only the MACs and bytes those kernels skip
(:func:`energyprune.energy.lm.per_token.profile_lm`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.pruning.decoder import decoder_layers, input_sq_norms

__all__ = ["is_nm_sparse", "wanda_prune"]


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    found = []
    for i, layer in enumerate(decoder_layers(model)):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                found.append((f"model.layers.{i}.{name}", module))
    return found


@torch.no_grad()
def wanda_prune(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    sparsity: float = 0.5,
    nm: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Zero weights of every decoder linear layer in place; returns each layer's sparsity.
    ``nm=(n, m)`` keeps the best ``n`` of every ``m`` consecutive inputs (2:4 keeps 2 of 4)."""
    if nm is None and not 0 < sparsity < 1:
        raise ConfigError(f"sparsity must be in (0, 1), got {sparsity}")
    if nm is not None and not 0 < nm[0] < nm[1]:
        raise ConfigError(f"N:M needs 0 < N < M (N kept of every M), got {nm[0]}:{nm[1]}")
    batches = list(batches)  # every layer reads them again
    done = {}
    for layer in range(len(decoder_layers(model))):
        named = [(n, lin) for n, lin in _linears(model) if n.startswith(f"model.layers.{layer}.")]
        norms = input_sq_norms(model, [lin for _, lin in named], batches)
        for (name, lin), sq in zip(named, norms, strict=True):
            mask = _mask(lin.weight, sq, sparsity, nm)
            if mask is not None:
                lin.weight.mul_(mask)
                done[name] = 1 - float(mask.float().mean())
    return done


def _mask(w: torch.Tensor, sq: torch.Tensor, sparsity: float, nm) -> torch.Tensor | None:
    """The weights Wanda keeps (None: an input width N:M kernels cannot tile stays dense)."""
    score = w.abs().float() * sq.to(w.device).sqrt()
    if nm is None:
        k = int(w.shape[1] * sparsity)
        drop = score.topk(k, dim=1, largest=False).indices
        return torch.ones_like(w, dtype=torch.bool).scatter_(1, drop, False)
    n, m = nm
    if w.shape[1] % m:
        return None
    groups = score.view(w.shape[0], -1, m)
    drop = groups.topk(m - n, dim=2, largest=False).indices
    mask = torch.ones_like(groups, dtype=torch.bool).scatter_(2, drop, False)
    return mask.view_as(w)


def is_nm_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether at most ``n`` of every ``m`` consecutive inputs of each row are non-zero."""
    if weight.dim() != 2 or weight.shape[1] % m or weight.is_meta:
        return False
    nonzero = (weight.detach().view(weight.shape[0], -1, m) != 0).sum(dim=2)
    return bool((nonzero <= n).all())
