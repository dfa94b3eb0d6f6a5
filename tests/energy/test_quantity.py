"""Estimated and measured energy are different types: like figures divide, mixed ones raise."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from energyprune.energy.measurement.protocol import Measurement
from energyprune.energy.pricing.estimates import profile
from energyprune.energy.quantity import Estimated, Measured, energy_from_dict

joules = st.floats(min_value=1e-9, max_value=1e3)


@given(joules, joules)
def test_like_figures_divide(a, b):
    assert Estimated(a, "horowitz-45nm") / Estimated(b, "horowitz-45nm") == pytest.approx(a / b)
    assert Measured(a, "nvml", 5, 0.0) / Measured(b, "nvml", 5, 0.0) == pytest.approx(a / b)


def test_dividing_a_measurement_by_an_estimate_raises():
    measured, estimated = Measured(2.0, "nvml", 5, 0.1), Estimated(1.0, "horowitz-45nm")
    with pytest.raises(TypeError, match=r"measured .* and estimated"):
        measured / estimated
    with pytest.raises(TypeError):
        estimated / measured
    with pytest.raises(TypeError):
        measured - estimated
    with pytest.raises(TypeError):  # gross and idle-subtracted readings are not alike either
        measured / Measured(1.0, "nvml", 5, 0.1, basis="active")
    with pytest.raises(TypeError):  # nor estimates under two profiles
        estimated / Estimated(1.0, "eyeriss-65nm")


def test_figures_round_trip_through_json_with_their_labels():
    for figure in (Estimated(1.5, "eyeriss-65nm", "fit.yaml"), Measured(2.0, "rapl", 3, 0.2)):
        data = figure.to_dict()
        assert data["kind"] == figure.kind and energy_from_dict(data) == figure
    assert Estimated(1.0, "horowitz-45nm").label == "estimated (horowitz-45nm)"
    assert Measured(1.0, "nvml", 5, 0.1).label == "measured (nvml, gross)"


def test_profile_and_measurement_hand_out_typed_figures():
    prof = profile(nn.Linear(4, 2), torch.randn(1, 4))
    assert prof.energy == Estimated(prof.total.energy_j, "horowitz-45nm", prof.hardware_source)
    unread = Measurement(False, "estimate", "cpu", 1, "fp32", None, None, {}, 0.0, None, None, ())
    assert unread.energy is None
