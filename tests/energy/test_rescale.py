"""Re-pricing traced ops at other widths equals tracing the narrower model
(energy/pricing/rescale.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.pricing.estimates import profile
from energyprune.energy.pricing.rescale import Resize, rescaled_energy, rescaled_profile


def _net(c1: int, c2: int, depthwise: bool = False) -> nn.Module:
    torch.manual_seed(0)
    middle = nn.Conv2d(c1, c1, 3, padding=1, groups=c1) if depthwise else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(3, c1, 3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        middle,
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.BatchNorm2d(c2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c2, 10),
    ).eval()


def _resizes(c1: int, c2: int, w1: int, w2: int, depthwise: bool) -> dict[str, Resize]:
    out = {
        "0": Resize(3, 3, c1, w1),
        "1": Resize(c1, w1, c1, w1),
        "4": Resize(c1, w1, c2, w2),
        "5": Resize(c2, w2, c2, w2),
        "9": Resize(c2, w2, 10, 10),
    }
    if depthwise:
        out["3"] = Resize(c1, w1, c1, w1)
    return out


@settings(max_examples=12, deadline=None)
@given(
    w1=st.integers(1, 48),
    w2=st.integers(1, 64),
    depthwise=st.booleans(),
    hardware=st.sampled_from(["horowitz-45nm", "eyeriss-65nm", "jetson-tx2"]),
)
def test_rescaled_estimate_equals_tracing_the_narrower_model(w1, w2, depthwise, hardware):
    # 32x32 activations cross the on-chip buffer as they narrow: the levels are decided again
    x, hw = torch.randn(1, 3, 32, 32), load_hardware(hardware)
    with torch.no_grad():
        wide = profile(_net(48, 64, depthwise), x, hw)
        narrow = profile(_net(w1, w2, depthwise), x, hw).total.energy_j
    rescaled = rescaled_energy(wide, _resizes(48, 64, w1, w2, depthwise), hw)
    assert rescaled == pytest.approx(narrow, rel=1e-9)


def test_nothing_resized_is_the_traced_total():
    x, hw = torch.randn(1, 3, 16, 16), load_hardware("horowitz-45nm")
    with torch.no_grad():
        prof = profile(_net(8, 8), x, hw)
    assert rescaled_energy(prof, {}, hw) == pytest.approx(prof.total.energy_j, rel=1e-12)


def test_rescaled_profile_prices_like_rescaled_energy_and_narrows_outputs():
    x, hw = torch.randn(1, 3, 32, 32), load_hardware("horowitz-45nm")
    with torch.no_grad():
        wide = profile(_net(48, 64), x, hw)
        narrow = profile(_net(20, 30), x, hw)
    resized = _resizes(48, 64, 20, 30, False)
    got = rescaled_profile(wide, resized, hw)
    assert got.total.energy_j == pytest.approx(rescaled_energy(wide, resized, hw), rel=1e-12)
    assert got.total.energy_j == pytest.approx(narrow.total.energy_j, rel=1e-9)

    def outputs(prof):  # of ops without parameters: the next round's savings divide by them
        return [
            op.record.output_shapes
            for op in prof.ops
            if op.record.operands and all(o.role != "param" for o in op.record.operands)
        ]

    assert outputs(got) == outputs(narrow)


@pytest.mark.parametrize(("w1", "w2", "depthwise"), [(5, 64, True), (48, 7, False), (17, 33, True)])
def test_a_fusing_occupancy_bound_profile_rescales_as_it_prices(w1, w2, depthwise):
    # jetson-tx2: epilogues fused, occupancy from output elements, a fixed time per forward
    x, hw = torch.randn(1, 3, 32, 32), load_hardware("jetson-tx2")
    with torch.no_grad():
        wide = profile(_net(48, 64, depthwise), x, hw)
        narrow = profile(_net(w1, w2, depthwise), x, hw).total
    rescaled = rescaled_profile(wide, _resizes(48, 64, w1, w2, depthwise), hw).total
    assert rescaled.energy_j == pytest.approx(narrow.energy_j, rel=1e-9)
    assert rescaled.seconds == pytest.approx(narrow.seconds, rel=1e-9)
