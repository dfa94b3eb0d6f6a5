"""Roofline time and static energy: max(compute, memory) + launches, static power over it."""

from __future__ import annotations

import dataclasses
from importlib import resources

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.pricing.estimates import profile
from energyprune.errors import ConfigError

BASE = load_hardware("horowitz-45nm")


def _timed(**rates):
    settings_ = {"peak_flops": {"fp32": 1e9}, "bandwidth": {"dram": 1e9}, "static_w": 2.0}
    return dataclasses.replace(BASE, **{**settings_, **rates})


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 64))
def test_an_op_takes_the_slower_of_compute_and_weight_traffic(batch):
    layer = torch.nn.Linear(64, 64, bias=False)
    prof = profile(layer, torch.randn(batch, 64), _timed())
    compute_s = 2 * batch * 64 * 64 / 1e9  # a MAC is 2 FLOPs
    weights_s = 64 * 64 * 4 / 1e9  # parameters come from DRAM; activations fit the buffer
    assert prof.total.seconds == pytest.approx(max(compute_s, weights_s), rel=1e-6)


def test_static_energy_is_static_power_over_the_time_and_nothing_else_moves():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    x = torch.randn(2, 3, 16, 16)
    plain, timed = profile(model, x, BASE), profile(model, x, _timed(launch_s=1e-6))
    assert timed.total.static_j == pytest.approx(2.0 * timed.total.seconds)
    assert timed.total.energy_j - timed.total.static_j == pytest.approx(plain.total.energy_j)
    for a, b in zip(plain.layers, timed.layers, strict=True):
        assert b.static_j == pytest.approx(2.0 * b.seconds)
        assert b.energy_j - b.static_j == pytest.approx(a.energy_j)
    assert plain.total.seconds == 0.0 and "seconds" not in plain.to_dict()["total"]
    assert timed.to_dict()["layers"][0]["seconds"] > 0
    launches = sum(1 for op in timed.ops if op.seconds)  # each launched op pays its launch
    untimed_launch = profile(model, x, _timed()).total.seconds
    assert timed.total.seconds == pytest.approx(untimed_launch + launches * 1e-6)


def _write(tmp_path, **changes):
    text = (
        resources.files("energyprune.energy.hardware") / "profiles" / "horowitz-45nm.yaml"
    ).read_text()
    data = {**yaml.safe_load(text), **changes}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"peak_flops": {"fp32": 1.0e12}}, "give both peak_flops and bandwidth"),
        ({"peak_flops": {"fp32": 1.0e12}, "bandwidth": {"hbm": 1.0e12}}, "bandwidth names hbm"),
        ({"peak_flops": {"fp32": 0}, "bandwidth": {"dram": 1.0e12}}, "must be > 0"),
        ({"peak_flops": {"fp32": "1e12"}, "bandwidth": {"dram": 1.0e12}}, "write 1.0e\\+12"),
    ],
)
def test_bad_rates_are_refused_with_the_fix(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_hardware(_write(tmp_path, **changes))


def test_a_timed_profile_needs_a_peak_for_every_dtype_it_runs():
    with pytest.raises(ConfigError, match="no peak_flops for fp16"):
        profile(torch.nn.Linear(8, 8), torch.randn(2, 8), _timed(), dtype="fp16")


def test_the_h100_profile_is_timed_and_cites_its_figures():
    hw = load_hardware("h100-sxm-datasheet")
    assert hw.timed and hw.static_w == 73.5 and hw.bandwidth == {"dram": 3.35e12}
    assert hw.peak_flops["bf16"] == 989.4e12 and len(hw.sources) >= 3
    assert "UNCALIBRATED" in hw.description
    # decode-like: one token through a 4096x4096 bf16 projection is bound by its weight bytes
    prof = profile(torch.nn.Linear(4096, 4096, bias=False), torch.randn(1, 4096), hw, "bf16")
    assert prof.total.seconds == pytest.approx(4096 * 4096 * 2 / 3.35e12 + 4e-6, rel=0.01)


def test_a_model_built_on_the_meta_device_prices_like_the_real_one():
    """A config-only model (weights on the meta device, no memory) is priced dense, with the
    MACs and bytes of the same model holding real weights."""
    torch.manual_seed(0)
    real = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    with torch.device("meta"):
        meta = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    a = profile(real, torch.randn(4, 32), "h100-sxm-datasheet", shapes_only=True)
    b = profile(meta, torch.randn(4, 32, device="meta"), "h100-sxm-datasheet", shapes_only=True)
    assert (a.total.macs, a.total.bytes) == (b.total.macs, b.total.bytes)
    assert b.total.energy_j == pytest.approx(a.total.energy_j)
