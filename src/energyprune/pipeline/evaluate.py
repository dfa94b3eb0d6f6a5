"""Classification metrics and cost facts of a model: top-1, macro precision/recall/F1,
confusion matrix, estimated (and measured, where a meter exists) energy, latency, size."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import save as save_bytes
from torch import nn

from energyprune.energy.measurement.noise import Noise, iqr_fraction, other_load
from energyprune.energy.quantity import Estimated, Measured
from energyprune.models.placement import placement, to_model

__all__ = [
    "Metrics",
    "Timing",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "predict",
    "time_forward",
    "top1",
]


def predict(model: nn.Module, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, labels) over a loader, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    preds, labels = [], []
    where = placement(model)
    with torch.no_grad():
        for x, y in loader:
            preds.append(model(to_model(x, where)).argmax(1).cpu())
            labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(preds), torch.cat(labels)


def top1(model: nn.Module, loader: Iterable, num_classes: int) -> float:
    """Top-1 accuracy (fraction) of ``model`` over ``loader``."""
    pred, true = predict(model, loader)
    return classification_metrics(pred, true, num_classes)["top1"]


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = samples of true class ``i`` predicted as ``j``."""
    index = true.long() * num_classes + pred.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> dict:
    """Top-1 and macro precision / recall / F1 (fractions in [0, 1]); an empty class counts 0,
    as scikit-learn's ``zero_division=0``."""
    cm = confusion_matrix(pred, true, num_classes).double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), 0.0)
    present = (predicted + actual) > 0  # scikit-learn averages over labels that occur
    return {
        "top1": float(tp.sum() / cm.sum()),
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
        "confusion_matrix": cm.long().tolist(),
    }


@dataclass
class Metrics:
    """What the report shows for one model. ``energy`` is the figure reported (measured when a
    meter was read, else the estimate); ``estimate`` is always the energy model's."""

    top1: float
    precision: float
    recall: float
    f1: float
    energy: Estimated | Measured
    estimate: Estimated
    latency_ms: float
    macs: int
    params: int
    size_bytes: int
    confusion_matrix: list[list[int]]
    latency_noise: dict[str, Any] | None = None  # Noise.to_dict() of the latency reading

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["energy"], data["estimate"] = self.energy.to_dict(), self.estimate.to_dict()
        # flat keys for tables and older readers, derived from the typed figures
        data["energy_j"] = self.energy.joules
        data["energy_measured"] = isinstance(self.energy, Measured)
        data["energy_estimated_j"] = self.estimate.joules
        data["hardware"] = self.estimate.profile
        return data


@dataclass(frozen=True)
class Timing:
    """Median wall time of single forward passes and how far it can be trusted."""

    median_ms: float
    noise: Noise


def time_forward(model: nn.Module, example: torch.Tensor, repeats: int = 20) -> Timing:
    """Median of ``repeats`` forward passes after 3 warm-up passes, in ms, with its spread and
    the other load on the machine (CPU timing; the measurement protocol in
    energy/measurement/protocol.py is the synchronised, windowed one)."""
    model.eval()
    with torch.no_grad(), other_load() as load:
        for _ in range(3):
            model(example)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - start)
    median = 1e3 * sorted(times)[len(times) // 2]
    return Timing(median, Noise(iqr_fraction(times), load.cores))


def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    example: torch.Tensor,
    hardware: str = "horowitz-45nm",
    meter_device: str | None = None,
) -> Metrics:
    """Accuracy metrics on ``loader`` plus estimated energy (and measured energy when
    ``meter_device`` has a readable meter), median latency, MACs, params and size on disk."""
    from energyprune.energy.pricing.estimates import profile
    from energyprune.models.layers import folded_copy

    pred, true = predict(model, loader)
    metrics = classification_metrics(pred, true, num_classes)
    prof = profile(model, example, hardware, shapes_only=True)
    energy: Estimated | Measured = prof.energy
    if meter_device is not None:
        from energyprune.energy.measurement.protocol import MeasurementProtocol, measure

        m = measure(model, example, device=meter_device, protocol=MeasurementProtocol(windows=5))
        if m.energy is not None:
            energy = m.energy.scaled(example.shape[0])  # per sample → per batch, as estimated
    state = {k: v.contiguous() for k, v in folded_copy(model).state_dict().items()}
    timing = time_forward(model, example)
    return Metrics(
        top1=metrics["top1"],
        precision=metrics["precision"],
        recall=metrics["recall"],
        f1=metrics["f1"],
        energy=energy,
        estimate=prof.energy,
        latency_ms=timing.median_ms,
        latency_noise=timing.noise.to_dict(),
        macs=prof.total.macs,
        params=prof.total.params,
        size_bytes=len(save_bytes(state)),
        confusion_matrix=metrics["confusion_matrix"],
    )
