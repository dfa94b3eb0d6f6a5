"""One pricing path: a masked model gets one estimate whether the run loop, the co-design or the
search asks (issue 13)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from energyprune.energy.pricing.estimates import profile
from energyprune.models.layers import folded_copy
from energyprune.pipeline.codesign import int8_energy_ratio
from energyprune.pipeline.config import RunConfig
from energyprune.pipeline.steps import estimate_j
from energyprune.pruning.spec import PruneSpec

HW = "eyeriss-65nm"  # skips zeros: the masks change the estimate


def masked_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()  # fmt: skip
    for layer in (net[0], net[3], net[7]):
        torch_prune.l1_unstructured(layer, "weight", amount=0.6)
    return net


def test_a_masked_model_gets_one_estimate_whoever_asks():
    model = masked_net()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        deployed = profile(folded_copy(model), x, HW).total.energy_j
    # the run loop (steps.estimate_j), and codesign / search, which call profile in grad mode
    run_j = estimate_j(
        model, SimpleNamespace(input_shape=x.shape), RunConfig(spec=PruneSpec(hardware=HW)), "net"
    )
    direct_j = profile(model, x, HW).total.energy_j
    assert run_j == pytest.approx(deployed, rel=1e-9)
    assert direct_j == pytest.approx(deployed, rel=1e-9)
    ratio = int8_energy_ratio(model, x, HW)
    layers = {n: "int8" for n, m in folded_copy(model).named_modules() if n in {"0", "3", "7"}}
    with torch.no_grad():
        int8_j = profile(folded_copy(model), x, HW, layer_dtypes=layers).total.energy_j
    assert ratio == pytest.approx(int8_j / deployed, rel=1e-9)
    assert all(hasattr(model[i], "weight_orig") for i in (0, 3, 7))  # the caller's model kept
