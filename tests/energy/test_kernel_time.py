"""The runtime's kernel terms (energy/hardware/kernel_time.py): which ops a fusing runtime runs in
a conv's epilogue and what they then cost, the profile's ``runtime:`` section and its bad input, one
op's seconds by hand, the fit's arrays pricing rows as op_seconds does, and a fit that brings
known terms back from rows they made."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from energyprune.energy.calibration.fit import FitSpec
from energyprune.energy.calibration.observations import Observation
from energyprune.energy.calibration.profile_file import profile_to_yaml
from energyprune.energy.calibration.time_terms import OpArrays, TimeTerms
from energyprune.energy.calibration.timed_fit import (
    TimedRow,
    fit_timed_observations,
    predict_joules,
    predict_seconds,
)
from energyprune.energy.hardware.kernel_time import (
    KernelTiming,
    fused_ops,
    op_timing,
    parse_runtime,
)
from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.pricing.estimates import profile
from energyprune.energy.pricing.features import op_amounts, op_features
from energyprune.energy.pricing.roofline import op_seconds
from energyprune.energy.tracing.tracer import trace
from energyprune.errors import ConfigError
from energyprune.models.zoo import build_model

ROOT = Path(__file__).resolve().parents[2]
BASE = load_hardware(ROOT / "benchmarks" / "configs" / "jetson-tx2-datasheet.yaml")
PLAIN = dataclasses.replace(BASE, runtime=KernelTiming())


class Residual(nn.Module):
    """conv-BN-ReLU, conv-BN, + input, ReLU; then a max-pool and a ReLU that follows no conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))
        return torch.relu(nn.functional.max_pool2d(torch.relu(x + y), 2))


def _records():
    with torch.no_grad():
        return trace(Residual().eval(), torch.randn(1, 8, 16, 16)).records


def test_a_fusing_runtime_runs_norms_activations_and_the_residual_add_in_the_conv():
    records = _records()
    fused = fused_ops(records, BASE.runtime)
    names = [records[i].op.split(".")[1] for i in sorted(fused)]
    assert names == ["native_batch_norm", "relu", "native_batch_norm", "add", "relu"]
    last = max(i for i, r in enumerate(records) if r.op.startswith("aten.relu"))
    assert last not in fused  # after the pool: its own kernel
    assert fused_ops(records, PLAIN.runtime) == frozenset()


def test_a_fused_op_launches_nothing_and_reads_only_a_residuals_second_input():
    records = _records()
    fused = fused_ops(records, BASE.runtime)
    by_op = {records[i].op.split(".")[1]: i for i in sorted(fused)}
    bn = op_features(records[by_op["native_batch_norm"]], BASE, None, fused=True).amounts
    assert bn["launch"] == 0 and not any(k.startswith("bytes:") and v for k, v in bn.items())
    assert bn["add:fp32"] > 0  # its arithmetic stays
    add = op_features(records[by_op["add"]], BASE, None, fused=True)
    assert add.amounts["launch"] == 0 and add.bytes_moved == 8 * 16 * 16 * 4  # one input
    unfused = op_features(records[by_op["add"]], BASE, None)
    assert unfused.amounts["launch"] == 1 and unfused.bytes_moved == 3 * 8 * 16 * 16 * 4


def test_fusion_lowers_the_estimate_only_where_the_profile_fuses():
    model, x = Residual().eval(), torch.randn(1, 8, 16, 16)
    fused, plain = profile(model, x, BASE), profile(model, x, PLAIN)
    assert fused.total.bytes < plain.total.bytes and fused.total.seconds < plain.total.seconds
    assert fused.total.macs == plain.total.macs


@pytest.mark.parametrize(
    ("runtime", "says"),
    [
        ({"occupancy": 1.0}, "runtime has no field occupancy"),
        ({"efficiency": {"dense": 0.5}}, "runtime.efficiency names dense"),
        ({"efficiency": {"depthwise": 0}}, "must be > 0"),
        ({"launch_s": {"data": -1e-4}}, "runtime.launch_s.data must be a number >= 0"),
        ({"occupancy_outputs": "many"}, "runtime.occupancy_outputs must be a number >= 0"),
        ([1, 2], "runtime must be a mapping"),
    ],
)
def test_a_bad_runtime_section_is_one_line_naming_the_field(runtime, says):
    with pytest.raises(ConfigError, match=says) as e:
        parse_runtime(runtime, "x.yaml")
    assert "\n" not in str(e.value)


def test_one_depthwise_conv_costs_what_the_terms_say():
    hw = dataclasses.replace(
        PLAIN, runtime=KernelTiming(occupancy_outputs=1000.0, efficiency={"depthwise": 0.25})
    )
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False).eval()
    with torch.no_grad():
        (record,) = trace(conv, torch.randn(1, 32, 8, 8)).records
    timing = op_timing(record)
    assert (timing.variant, timing.outputs, timing.weights) == ("depthwise", 32 * 64, 32 * 9)
    amounts = op_features(record, hw, None).amounts
    compute = 2 * 32 * 64 * 9 / hw.peak_flops["fp32"] / 0.25 * (2048 + 1000) / 2048
    memory = amounts["bytes:dram"] / hw.bandwidth["dram"]  # weights only: the maps fit on chip
    expected = max(compute, memory) + hw.launch_s
    assert op_seconds(amounts, hw, timing) == pytest.approx(expected, rel=1e-12)
    assert op_seconds(amounts, PLAIN, timing) < expected  # no terms: the plain roofline


BLOCKS = [f"fbnet:ConvBlock_H{h}_W{h}_Cin{c}_Cout{c}_exp{e}_kernel{k}_stride1_group{g}"
          for h, c in ((56, 16), (14, 64), (4, 184)) for e in (1, 3) for k in (3, 5)
          for g in (1, 2) if not (g == 2 and e != 1)]  # fmt: skip
BLOCKS += [f"fbnet:Skip_H{h}_W{h}_Cin{c}_Cout{2 * c}_stride2" for h, c in ((56, 16), (8, 64))]
TRUTH_TERMS = TimeTerms(0.3, 0.5, 4e-4, 2e-5, 3e4, {"depthwise": 0.2, "grouped": 0.5}, 2e3,
                        {"data": 2e-4})  # fmt: skip


def _rows(hw):
    rows = []
    for spec in BLOCKS:
        built = build_model(spec)
        ops, _ = op_amounts(built.model.eval(), torch.randn(*built.input_shape), hw)
        rows.append(TimedRow(ops, 1, 0.0, 0.0))
    return rows


def test_the_fits_arrays_price_every_row_as_op_seconds_does():
    rows = _rows(BASE)
    arrays = OpArrays.of(rows, BASE)
    hw = TRUTH_TERMS.apply(BASE)
    priced = [predict_seconds(r, hw) for r in rows]
    assert arrays.seconds(TRUTH_TERMS).tolist() == pytest.approx(priced, rel=1e-12)


def test_known_runtime_terms_are_fitted_back_from_rows_they_made(tmp_path):
    rows = _rows(BASE)
    truth = dataclasses.replace(TRUTH_TERMS.apply(BASE), static_w=4.0, active_w=1.5)
    made = [dataclasses.replace(r, latency_s=predict_seconds(r, truth), joules=0.0) for r in rows]
    made = [dataclasses.replace(r, joules=predict_joules(r, truth)) for r in made]
    observations = [Observation(s, "bs1/fp32", r.features(), 1, r.joules, 1, "fp32")
                    for s, r in zip(BLOCKS, made, strict=True)]  # fmt: skip
    result = fit_timed_observations(
        BASE,
        observations,
        made,
        FitSpec(name="fitted", shrink=0.0),
        device="made by a known profile",
        measured_with="rows made by a known profile",
    )
    report, runtime = result.report, result.profile.runtime
    assert report["latency_fitted_mape"] < 1e-3 and report["mape"] < 1e-3
    assert runtime.occupancy_outputs == pytest.approx(3e4, rel=1e-2)
    assert runtime.efficiency["depthwise"] == pytest.approx(0.2, rel=1e-2)
    assert runtime.launch_s["data"] == pytest.approx(2e-4, rel=1e-2)
    assert runtime.fuse_epilogues  # the base's, not fitted
    assert result.profile.static_w == pytest.approx(4.0, rel=1e-2)
    assert result.profile.active_w == pytest.approx(1.5, rel=2e-2)
    path = tmp_path / "fitted.yaml"  # the runtime and active power travel in the file
    path.write_text(profile_to_yaml(result))
    again = load_hardware(path)
    assert again.runtime == runtime and again.active_w == result.profile.active_w
