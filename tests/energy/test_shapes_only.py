"""Pricing on fake tensors (``shapes_only``) gives the same estimate as a real forward."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from energyprune.energy.pricing.estimates import profile
from energyprune.energy.tracing.tracer import trace


def _sparse_mlp() -> nn.Module:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    with torch.no_grad():
        model[0].weight[:, ::2] = 0  # half the weights are zero: densities must be real
    return model


def test_fake_trace_records_equal_the_real_ones_with_real_densities():
    model, x = _sparse_mlp(), torch.randn(4, 32)
    real, fake = trace(model, x), trace(model, x, shapes_only=True)
    assert fake.records == real.records
    densities = [op.density for r in fake.records for op in r.operands if op.name == "0.weight"]
    assert densities and all(abs(d - 0.5) < 1e-6 for d in densities)


def test_fake_profile_equals_real_on_convs_and_attention():
    for model, x in [
        (torchvision.models.resnet18(num_classes=10).eval(), torch.randn(1, 3, 32, 32)),
        (nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval(), torch.randn(2, 5, 32)),
    ]:
        with torch.no_grad():
            real = profile(model, x, "eyeriss-65nm").total.energy_j
            fake = profile(model, x, "eyeriss-65nm", shapes_only=True).total.energy_j
        assert fake == real


class _NeedsValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return y * 2 if y.sum().item() > 0 else y  # data-dependent: fake tensors cannot say


def test_a_forward_that_needs_values_is_traced_for_real():
    model, x = _NeedsValues().eval(), torch.randn(2, 8)
    assert trace(model, x, shapes_only=True).records == trace(model, x).records
