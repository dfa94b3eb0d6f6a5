"""Pruning × precision: 'prune more' vs 'prune less + int8' to one estimated-energy target."""

from __future__ import annotations

import copy
import json

import pytest

from energyprune.energy.pricing.estimates import profile
from energyprune.models.placement import example_input
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pipeline.run import RunConfig
from energyprune.pipeline.steps import prune_step

pytest.importorskip("torchao")

from energyprune.pipeline.codesign import (
    choose,
    int8_energy_ratio,
    prune_or_quantize,
    relaxed_target,
)
from energyprune.pipeline.run import QUIET


def test_relaxed_target_lands_int8_energy_on_the_target(trained_digits):
    model, data = trained_digits
    example = example_input(model, data.input_shape)
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


_CFG = {
    "target_energy": 0.2,
    "steps": 1,
    "max_acc_drop": 5.0,
    "train": TrainConfig(epochs=1, lr=1e-3, optimizer="adamw", max_batches=5),
}


def test_both_options_run_and_the_choice_is_consistent(trained_digits, tmp_path):
    from energyprune.energy.measurement.protocol import MeasurementProtocol

    model, data = trained_digits
    cfg = RunConfig(**_CFG)
    protocol = MeasurementProtocol(min_window_s=0.02, windows=2, warmup_s=0.02, idle_s=0.0)
    int8 = {"compile": False, "protocol": protocol, "qat": None, "calibration_batches": 2}
    int8["measure_batch"] = 8  # energy stays per sample whatever the measurement's batch
    report = prune_or_quantize(
        model, data, cfg, tmp_path, arch="digits_cnn", int8=int8, hooks=QUIET
    )
    assert json.loads((tmp_path / "tradeoff.json").read_text()) == report
    prune, quant = report["options"]
    assert prune["option"] == "prune" and quant["option"] == "prune+int8"
    assert quant["pruning_target"] > prune["pruning_target"]  # prunes less
    assert "failed" not in quant  # a 5-pt guardrail leaves room for int8 on digits
    assert quant["energy_fraction"] < quant["pruning_target"]
    assert (tmp_path / "prune+int8" / "int8" / "model.pt2").is_file()
    assert quant["measured_verdict"].startswith("int8 runs at")
    for o in report["options"]:  # the guardrail may stop a run short of the target
        fraction = o["energy_fraction"]
        assert o["meets_target"] == (fraction <= 0.2 * 1.01)
    chosen = choose(copy.deepcopy(report["options"]), RunConfig(**_CFG), report["dense_val_top1"])
    assert report["choice"] == (chosen["option"] if chosen else None)


def _option(name: str, val: float, energy: float | None, **extra) -> dict:
    return {"option": name, "val_top1": val, "energy_fraction": energy, **extra}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # both hold: the higher validation top-1 wins
        ([_option("prune", 0.90, 0.20), _option("prune+int8", 0.93, 0.19)], "prune+int8"),
        # equal top-1: the lower energy
        ([_option("prune", 0.93, 0.18), _option("prune+int8", 0.93, 0.19)], "prune"),
        # int8 measured slower or costlier: never chosen, whatever its accuracy
        (
            [
                _option("prune", 0.90, 0.20),
                _option("prune+int8", 0.95, 0.19, measured_recommended=False),
            ],
            "prune",
        ),
        # a noisy int8 measurement (None) neither qualifies nor disqualifies it
        (
            [
                _option("prune", 0.90, 0.20),
                _option("prune+int8", 0.95, 0.19, measured_recommended=None, measured_verdict="x"),
            ],
            "prune+int8",
        ),
        # misses the target / breaks the guardrail / failed: out
        ([_option("prune", 0.95, 0.30), _option("prune+int8", 0.91, 0.19)], "prune+int8"),
        ([_option("prune", 0.80, 0.20), _option("prune+int8", 0.91, 0.19)], "prune+int8"),
        ([_option("prune", 0.80, 0.20), _option("prune+int8", None, None, failed="x")], None),
    ],
)
def test_choice_follows_target_guardrail_and_measurement(options, expected):
    cfg = RunConfig(target_energy=0.2, max_acc_drop=5.0)
    chosen = choose(options, cfg, dense_val=0.95)
    assert (chosen["option"] if chosen else None) == expected


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


def test_a_noisy_measurement_is_named_in_the_reason():
    from energyprune.pipeline.codesign import _reason

    options = [
        _option("prune", 0.90, 0.20),
        _option("prune+int8", 0.95, 0.19, measured_recommended=None, measured_verdict="x"),
    ]
    chosen = choose(options, RunConfig(target_energy=0.2, max_acc_drop=5.0), dense_val=0.95)
    reason = _reason(chosen, options)
    assert reason.endswith(
        "'prune+int8' was judged without its measurement (too noisy to judge; rerun on an idle "
        "machine)"
    )
