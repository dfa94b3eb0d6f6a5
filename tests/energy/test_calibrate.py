"""Calibration fits a profile to metered variants; checked against a known synthetic device."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from energyprune.energy.calibration.fidelity import pairwise_agreement
from energyprune.energy.calibration.live import (
    Variant,
    calibrate,
    conv_stack,
    design_variants,
    mlp_stack,
)
from energyprune.energy.calibration.profile_file import profile_to_yaml, write_calibration
from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.pricing.estimates import estimate, profile
from energyprune.energy.tracing.tracer import trace

# A synthetic GPU: launches cost 2 µJ each and widths off a multiple of 8 cost 3 pJ/MAC extra,
# so plain MAC counts misorder many pairs while the profile's features can explain them.
TRUTH = replace(
    load_hardware("gpu-generic"),
    name="truth",
    compute_pj={
        "fp32": {"mac": 2.0, "add": 0.5},
        "fp16": {"mac": 1.0, "add": 0.3},
        "bf16": {"mac": 1.0, "add": 0.3},
        "int8": {"mac": 0.5, "add": 0.1},
        "int32": {"mac": 2.0, "add": 0.5},
    },
    memory_pj_per_byte={"buffer": 4.0, "dram": 30.0},
    launch_pj=2e6,
    unaligned_mac_pj=3.0,
)


def synthetic_meter(noise: float = 0.02):
    rng = np.random.default_rng(0)

    def measure_fn(model, example, variant) -> float:
        with torch.no_grad():
            joules = estimate(trace(model, example), TRUTH).total.energy_j / example.shape[0]
        return joules * (1 + noise * rng.standard_normal())

    return measure_fn


def small_variants() -> list[Variant]:
    variants = []
    for bs in (1, 4):
        variants += [
            Variant(f"conv{w}", lambda w=w: conv_stack(w, depth=3), (bs, 3, 8, 8))
            for w in (8, 12, 14, 16, 20, 24, 30, 32, 40)
        ]
        variants += [
            Variant(f"mlp{w}", lambda w=w: mlp_stack(w, depth=2), (bs * 4, w))
            for w in (16, 20, 24, 30, 32, 48)
        ]
    return variants


def test_fit_recovers_a_known_device_and_beats_macs(tmp_path):
    result = calibrate("cpu", variants=small_variants(), measure_fn=synthetic_meter())
    rep = result.report
    assert rep["n_train"] + rep["n_heldout"] == 30 and rep["n_heldout"] >= 2
    assert rep["split"] == "group" and len(rep["heldout_families"]) >= 2  # whole variants out
    assert all(v["heldout"] for v in rep["variants"] if v["family"] in rep["heldout_families"])
    assert rep["pairwise_agreement"] >= rep["macs_pairwise_agreement"]
    assert rep["mape"] < 0.1 < rep["macs_mape"]
    random = rep["random_split"]  # the same fit on rows held out at random, shown beside
    assert random["pairwise_agreement"] >= 0.9
    assert random["pairwise_agreement"] > random["macs_pairwise_agreement"]
    hw = result.profile
    assert hw.launch_pj == pytest.approx(2e6, rel=0.25)
    assert hw.unaligned_mac_pj == pytest.approx(3.0, rel=0.5)
    assert "mac:int8" in rep["not_calibrated"]  # never exercised: kept from the base profile

    out = tmp_path / "cal.yaml"
    write_calibration(result, str(out), str(tmp_path / "cal.json"))
    loaded = load_hardware(out)
    assert loaded.calibration["pairwise_agreement"] == rep["pairwise_agreement"]
    assert json.loads((tmp_path / "cal.json").read_text())["n_train"] == rep["n_train"]
    prof = profile(conv_stack(30), torch.randn(1, 3, 8, 8), out)
    assert prof.total.overhead_j > 0 and prof.hardware == hw.name


def test_pairwise_agreement_counts_only_comparable_pairs():
    measured = [1.0, 2.0, 3.0, 10.0]
    groups = ["a", "a", "a", "b"]
    assert pairwise_agreement([1, 2, 3, 0], measured, groups) == 1.0
    assert pairwise_agreement([3, 2, 1, 0], measured, groups) == 0.0
    assert pairwise_agreement([1, 1, 1, 0], measured, groups) == 0.5  # ties count half


def test_designed_set_covers_odd_widths_batches_and_dtypes():
    variants = design_variants("cuda")
    widths = {int(v.name[4:]) for v in variants if v.name.startswith("conv")}
    assert {w for w in widths if w % 8} and {w for w in widths if w % 16 == 8}
    assert {v.batch_size for v in variants} >= {1, 64, 512}
    assert {v.dtype for v in variants} == {"fp16", "bf16", "fp32"}
    assert {"resnet20", "resnet56", "vgg16_bn"} <= {v.name for v in variants}


def test_yaml_names_its_origin():
    result = calibrate("cpu", variants=small_variants()[:15], measure_fn=synthetic_meter())
    text = profile_to_yaml(result)
    assert "caller-supplied measure_fn" in text and "gpu-generic" in text
    assert "fitted to those measurements: " in text and "mac:fp32" in text
