"""Fitting time and static power to rows with measured latency and gross energy: rows made by a
known timed profile are fitted back (efficiencies, fixed time per forward, launch time, static
power), held-out rows are priced as estimate() prices them, and a fixed time per forward sits
in the total but in no layer."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from energyprune.energy.calibration.from_table import calibrate_from
from energyprune.energy.calibration.timed_fit import (
    EFFICIENCIES,
    TimedRow,
    predict_joules,
    predict_seconds,
)
from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.pricing.estimates import profile
from energyprune.energy.pricing.features import op_amounts
from energyprune.models.zoo import build_model

BASE = load_hardware("h100-sxm-datasheet")
TRUTH = dataclasses.replace(
    BASE,
    name="truth",
    peak_flops={d: v * EFFICIENCIES[16] for d, v in BASE.peak_flops.items()},  # 10 %
    bandwidth={k: v * EFFICIENCIES[20] for k, v in BASE.bandwidth.items()},  # 31.6 %
    launch_s=2e-5,
    forward_s=4e-4,
    static_w=50.0,
    compute_pj={**BASE.compute_pj, "fp32": {"mac": 25.0, "add": 2.0}},
)
SPECS = [(f"Conv2d({c}, {d}, {k}, padding={k // 2})", (b, c, s, s))
         for c, d in ((16, 16), (16, 48), (64, 64), (96, 32)) for k in (1, 3)
         for b, s in ((1, 56), (8, 14))]  # fmt: skip
SPECS += [(f"Linear({w}, {v})", (t, w)) for w, v in ((256, 1024), (1024, 256)) for t in (1, 64)]
SPECS += [(f"tests.energy.test_timed_fit:stack{n}", (b, 16, s, s))  # several kernels each
          for n in (2, 3, 5) for b, s in ((1, 32), (4, 64))]  # fmt: skip


def _stack(n: int) -> torch.nn.Module:
    """``n`` x (3x3 conv, ReLU): compute-bound convs and memory-bound ReLUs, 2n launches."""
    layers = [m for _ in range(n) for m in (torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())]
    return torch.nn.Sequential(*layers)


def stack2():
    return _stack(2)


def stack3():
    return _stack(3)


def stack5():
    return _stack(5)


def _table(tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["model", "input_shape", "dtype", "joules_per_sample", "latency_ms"])
        for spec, shape in SPECS:
            model = build_model(spec).model.eval()
            ops, _ = op_amounts(model, torch.randn(*shape), BASE)
            row = TimedRow(ops, shape[0], 0.0, 0.0)
            joules, ms = predict_joules(row, TRUTH), 1000 * predict_seconds(row, TRUTH)
            out.writerow([spec, ",".join(map(str, shape)), "fp32", joules, ms])
    return path


def test_a_timed_profile_is_fitted_back_from_its_own_rows(tmp_path):
    result = calibrate_from(_table(tmp_path), base=BASE, seed=0)
    hw, report = result.profile, result.report
    assert report["compute_efficiency"] == pytest.approx(EFFICIENCIES[16])
    assert report["bandwidth_efficiency"] == pytest.approx(EFFICIENCIES[20])
    assert hw.forward_s == pytest.approx(4e-4, rel=1e-3)
    assert hw.launch_s == pytest.approx(2e-5, rel=1e-3)
    assert hw.static_w == pytest.approx(50.0, rel=1e-3)
    assert report["mape"] < 1e-3 and report["latency_fitted_mape"] < 1e-3
    assert report["latency_base_mape"] > 0.5  # the datasheet peaks are far from the truth


def test_the_fitted_profile_prices_a_model_as_the_fit_predicted(tmp_path):
    hw = calibrate_from(_table(tmp_path), base=BASE, seed=0).profile
    model, shape = build_model("Conv2d(32, 32, 3, padding=1)").model.eval(), (1, 32, 28, 28)
    x = torch.randn(*shape)
    ops, _ = op_amounts(model, x, BASE)
    priced = profile(model, x, hw)
    assert priced.total.seconds == pytest.approx(predict_seconds(TimedRow(ops, 1, 0, 0), hw))
    assert priced.total.energy_j == pytest.approx(predict_joules(TimedRow(ops, 1, 0, 0), hw))
    layers = sum(layer.energy_j for layer in priced.layers)
    assert priced.total.energy_j - layers == pytest.approx(hw.static_w * hw.forward_s)


def test_without_a_latency_column_the_fit_stays_linear(tmp_path):
    path = _table(tmp_path)
    rows = list(csv.reader(path.open()))
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([r[:4] for r in rows])
    report = calibrate_from(path, base=BASE, seed=0).report
    assert "compute_efficiency" not in report and "latency_fitted_mape" not in report
