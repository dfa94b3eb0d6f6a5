"""Recovering accuracy after a cut: batch-norm recalibration and distillation from the dense model.

Removing channels shifts every downstream batch-norm layer's input statistics, so a freshly
pruned model evaluated with its stale running statistics looks far worse than it is (ResNet-20 at
half energy: 10.6 % → 40.3 % top-1 from re-estimating them alone, shared/ANCHORS.md).
:func:`recalibrate_bn` re-estimates them with forward passes and no gradients ("adaptive BN",
EagleEye, ECCV 2020), which is what makes an untrained candidate judgeable.
:func:`distillation_loss` is Hinton et al.'s (2015) soft-target loss, the usual recovery loss of
compression pipelines: the dense model's softened outputs carry more than the labels do.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from energyprune.models.placement import placement, to_model

__all__ = ["Teacher", "distillation_loss", "recalibrate_bn", "state_digest"]


class Teacher:
    """The dense model as a distillation teacher, frozen for the whole run.

    A deep copy in eval mode with ``requires_grad=False``, so that no fine-tune, optimiser or
    batch-norm update can reach it, even when the model being pruned started as the same
    object. :meth:`check` proves it after every fine-tune: modes, gradient flags and a digest of
    every parameter and buffer (running statistics included) are as they were made.
    """

    def __init__(self, dense: nn.Module) -> None:
        self.module = copy.deepcopy(dense).eval().requires_grad_(False)
        self._digest = state_digest(self.module)

    def check(self) -> None:
        """Raise when anything changed the teacher (a bug, never a user error)."""
        m = self.module
        if any(x.training for x in m.modules()) or any(p.requires_grad for p in m.parameters()):
            raise RuntimeError("the distillation teacher left eval mode or regained gradients")
        if state_digest(m) != self._digest:
            raise RuntimeError("the distillation teacher's weights or statistics changed")


def state_digest(model: nn.Module) -> str:
    """A hash of the bytes of every parameter and buffer, in state-dict order (a run's
    checkpoint names its dense model by it)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        flat = t.detach().contiguous().reshape(-1).cpu()
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int = 50) -> int:
    """Re-estimate every batch-norm layer's running mean and variance over ``batches`` batches.

    Running statistics are reset and re-accumulated as an exact average (``momentum=None``)
    with the batch-norm layers in train mode, the rest of the model in eval mode (dropout off)
    and no gradients: weights never change. Returns the number of batches used (0 when the
    model has no batch norm or ``batches`` is 0). Modes and momenta are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    where = placement(model)
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
        m.train()
    used = 0
    try:
        with torch.no_grad():
            for x, _ in loader:
                if used >= batches:
                    break
                model(to_model(x, where, non_blocking=True))
                used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE(student, target)``.

    ``T²`` keeps the soft term's gradients on the scale of the hard one as T changes (Hinton
    et al.); with ``alpha=0`` this is plain cross-entropy.
    """
    hard = nn.functional.cross_entropy(student, target)
    if alpha == 0:
        return hard
    t = temperature
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student.float() / t, dim=-1),
        nn.functional.log_softmax(teacher.float() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1 - alpha) * hard
