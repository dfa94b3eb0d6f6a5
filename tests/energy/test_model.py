"""Energy model: hand-computed costs, memory levels, sparsity, dtype, JSON and plot."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import energyprune
from energyprune.energy.pricing.estimates import profile

# horowitz-45nm, fp32 (values from the profile's sources):
MAC_PJ, ADD_PJ = 3.7 + 0.9, 0.9
RF_PJ_B, BUF_PJ_B, DRAM_PJ_B = 10 / 8, 100 / 8, 1950 / 8
RF_PER_MAC = 2


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * abs(b)


def test_conv2d_by_hand():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    layer = profile(conv, torch.randn(1, 3, 32, 32)).layers[0]
    macs = 32 * 32 * 16 * 3 * 3 * 3
    weight_b, in_b, out_b = 16 * 27 * 4, 3 * 32 * 32 * 4, 16 * 32 * 32 * 4
    compute = macs * MAC_PJ * 1e-12
    memory = weight_b * DRAM_PJ_B + (in_b + out_b) * BUF_PJ_B + macs * 4 * RF_PER_MAC * RF_PJ_B
    assert layer.macs == macs and layer.bytes == weight_b + in_b + out_b
    assert close(layer.compute_j, compute)
    assert close(layer.memory_j, memory * 1e-12)


def test_linear_by_hand():
    fc = nn.Linear(64, 10)
    layer = profile(fc, torch.randn(4, 64)).layers[0]
    macs, adds = 4 * 64 * 10, 4 * 10  # bias add per output element
    param_b, in_b, out_b = (640 + 10) * 4, 4 * 64 * 4, 4 * 10 * 4
    compute = (macs * MAC_PJ + adds * ADD_PJ) * 1e-12
    memory = param_b * DRAM_PJ_B + (in_b + out_b) * BUF_PJ_B + macs * 4 * RF_PER_MAC * RF_PJ_B
    assert close(layer.compute_j, compute)
    assert close(layer.memory_j, memory * 1e-12)
    assert close(layer.energy_j, compute + memory * 1e-12)


def test_activation_larger_than_buffer_goes_to_dram():
    conv = nn.Conv2d(8, 8, 1, bias=False)
    x = torch.randn(1, 8, 128, 128)  # 512 KiB in, 512 KiB out: both fit the 1 MiB buffer
    big = torch.randn(1, 8, 256, 256)  # 2 MiB each: both spill
    small_mem = profile(conv, x).layers[0].memory_j
    big_mem = profile(conv, big).layers[0].memory_j
    macs_big = 256 * 256 * 64
    act_b = 8 * 256 * 256 * 4
    expected_big = (64 * 4 * DRAM_PJ_B + 2 * act_b * DRAM_PJ_B + macs_big * 8 * RF_PJ_B) * 1e-12
    assert close(big_mem, expected_big)
    assert big_mem > 4 * small_mem * 0.9  # 4x the data, but at 19.5x the cost per byte


def test_zero_weights_cost_less_only_under_zero_skipping():
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(1, 16, 16, 16)
    dense = {hw: profile(conv, x, hw).total.energy_j for hw in ("eyeriss-65nm", "horowitz-45nm")}
    with torch.no_grad():
        conv.weight.view(-1)[::2] = 0.0  # zero half of the weights
    sparse = {hw: profile(conv, x, hw).total.energy_j for hw in ("eyeriss-65nm", "horowitz-45nm")}
    assert sparse["eyeriss-65nm"] < dense["eyeriss-65nm"]
    assert sparse["horowitz-45nm"] == dense["horowitz-45nm"]
    layer = profile(conv, x, "eyeriss-65nm").layers[0]
    assert layer.compute_j == pytest.approx(16 * 16 * 16 * 16 * 9 * 0.5 * 1e-12)


def test_dtype_pricing():
    conv = nn.Conv2d(4, 8, 3, bias=False)
    x = torch.randn(1, 4, 10, 10)
    fp32, fp16, int8 = (profile(conv, x, dtype=d).total for d in ("fp32", "fp16", "int8"))
    assert fp16.bytes * 2 == fp32.bytes and int8.bytes * 4 == fp32.bytes
    assert close(fp16.compute_j / fp32.compute_j, 1.5 / 4.6)
    assert close(int8.compute_j / fp32.compute_j, 0.3 / 4.6)
    assert profile(conv.half(), x.half()).dtype == "fp16"  # as traced


@settings(max_examples=15, deadline=None)
@given(c_in=st.integers(1, 8), c_out=st.integers(1, 8), size=st.integers(3, 12))
def test_totals_are_sums_of_layers(c_in, c_out, size):
    model = nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, c_in, size, size)
    model(x)  # materialise the lazy layer
    prof = profile(model, x)
    assert close(prof.total.energy_j, sum(layer.energy_j for layer in prof.layers))
    assert prof.total.macs == sum(layer.macs for layer in prof.layers)
    assert prof.total.params == sum(p.numel() for p in model.parameters())


def test_json_schema_and_plot(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    prof = energyprune.profile(model, torch.randn(1, 3, 8, 8), name="tiny")
    data = json.loads(prof.to_json())
    assert {"model", "hardware", "dtype", "input_shape", "estimated", "total", "layers"} <= set(
        data
    )
    assert data["estimated"] is True and data["model"] == "tiny"
    keys = {"macs", "params", "bytes", "energy_j", "compute_j", "memory_j", "overhead_j"}
    assert set(data["total"]) == keys and data["total"]["overhead_j"] == 0.0
    assert all(set(layer) == keys | {"name", "type", "dtype"} for layer in data["layers"])
    energyprune.plot_layer_energy(prof, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_dtype():
    with pytest.raises(energyprune.ConfigError, match="dtype"):
        profile(nn.Linear(2, 2), torch.randn(1, 2), dtype="fp8")


def test_int8_conv_by_hand_and_mixed_precision():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.Conv2d(16, 8, 1))
    x = torch.randn(1, 3, 32, 32)
    prof = profile(model, x, layer_dtypes={"0": "int8"})
    first, second = prof.layers[0], prof.layers[1]
    macs = 32 * 32 * 16 * 27
    weight_b, in_b, out_b = 16 * 27, 3 * 32 * 32, 16 * 32 * 32  # one byte per element
    assert first.dtype == "int8" and second.dtype == "fp32"
    assert close(first.compute_j, macs * (0.2 + 0.1) * 1e-12)
    memory = weight_b * DRAM_PJ_B + (in_b + out_b) * BUF_PJ_B + macs * 1 * RF_PER_MAC * RF_PJ_B
    assert close(first.memory_j, memory * 1e-12)
    fp32_first = profile(model, x).layers[0]
    assert close(fp32_first.compute_j / first.compute_j, 4.6 / 0.3)
    assert close(second.energy_j, profile(model, x).layers[1].energy_j)
