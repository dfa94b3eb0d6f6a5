"""Pruning × precision: 'prune more' vs 'prune less + int8' to one estimated-energy target."""

from __future__ import annotations

import json

import pytest
import torch

from energyprune.energy.model import profile
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pipeline.run import RunConfig
from energyprune.pipeline.steps import prune_step

pytest.importorskip("torchao")

from energyprune.pipeline.codesign import (
    int8_energy_ratio,
    prune_or_quantize,
    relaxed_target,
)


def test_relaxed_target_lands_int8_energy_on_the_target(trained_digits):
    model, data = trained_digits
    example = torch.randn(*data.input_shape)
    cfg = RunConfig(target_energy=0.15)
    t = relaxed_target(model, example, cfg)
    assert 0.15 < t < 1.0
    dense_j = profile(model, example).total.energy_j
    pruned = prune_step(model, example, cfg, t * dense_j).model
    int8_fraction = int8_energy_ratio(pruned, example, cfg.hardware) * (
        profile(pruned, example).total.energy_j / dense_j
    )
    assert int8_fraction == pytest.approx(0.15, rel=0.03)
    # a loose target needs no pruning at all: int8 alone meets it
    assert relaxed_target(model, example, RunConfig(target_energy=0.9)) == 1.0


def test_both_options_run_and_the_choice_is_consistent(trained_digits, tmp_path):
    from energyprune.energy.measure import Protocol

    model, data = trained_digits
    cfg = RunConfig(
        target_energy=0.2,
        steps=1,
        max_acc_drop=5.0,
        train=TrainConfig(epochs=1, lr=1e-3, optimizer="adamw", max_batches=5),
    )
    protocol = Protocol(min_window_s=0.02, windows=2, warmup_s=0.02, idle_s=0.0)
    int8 = {"compile": False, "protocol": protocol, "qat": None, "calibration_batches": 2}
    int8["measure_batch"] = 8  # energy stays per sample whatever the measurement's batch
    report = prune_or_quantize(
        model, data, cfg, tmp_path, arch="digits_cnn", int8=int8, log=lambda m: None
    )
    assert json.loads((tmp_path / "tradeoff.json").read_text()) == report
    prune, quant = report["options"]
    assert prune["option"] == "prune" and quant["option"] == "prune+int8"
    for o in report["options"]:  # the guardrail may stop a run short of the target
        fraction = o["energy_fraction"]
        assert o["meets_target"] == (fraction is not None and fraction <= 0.2 * 1.01)
    assert quant["pruning_target"] > prune["pruning_target"]  # prunes less
    if "failed" not in quant:
        assert quant["energy_fraction"] < quant["pruning_target"]
        assert (tmp_path / "prune+int8" / "int8" / "model.pt2").is_file()
        assert quant["measured_verdict"].startswith("int8 runs at")
    eligible = [o for o in report["options"] if o["eligible"]]
    chosen = next((o for o in report["options"] if o["option"] == report["choice"]), None)
    if eligible:
        assert chosen["eligible"]
        assert chosen["val_top1"] == max(o["val_top1"] for o in eligible)
    else:
        assert report["choice"] is None and report["reason"].startswith("neither option holds")
    if quant.get("measured_recommended") is False:
        assert report["choice"] != "prune+int8"  # measured slower or costlier: never chosen


def test_cli_auto(tmp_path, capsys):
    from energyprune.cli import main

    args = ["prune", "digits_cnn", "--data", "digits", "--target-energy", "0.3", "--steps", "1"]
    args += ["--finetune-epochs", "1", "--optimizer", "adamw", "--lr", "0.002", "--eager"]
    args += ["--quantize", "auto", "--no-qat", "--seconds", "0.02", "--windows", "2"]
    assert main([*args, "--val-from", "test", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "prune more, or prune less + int8?" in out and "chosen:" in out
    assert (tmp_path / "tradeoff.json").is_file() and (tmp_path / "prune" / "report.json").is_file()
    for name in ("tradeoff.json", "prune/report.json"):  # --val-from reached every decision
        report = json.loads((tmp_path / name).read_text())
        assert report["validation"].startswith("half of test (180 images"), name
    assert "validation split: half of test" in (tmp_path / "prune" / "report.md").read_text()
