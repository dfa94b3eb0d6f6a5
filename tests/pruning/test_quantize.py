"""int8 post-training quantisation: round trip, pricing, mixed precision."""

from __future__ import annotations

import pytest
import torch

from energyprune.energy.model import profile
from energyprune.pipeline.evaluate import classification_metrics, predict

pytest.importorskip("torchao")

from energyprune.pruning.quantize import (
    load_quantized,
    quantize_int8,
    save_quantized,
)


@pytest.fixture
def trained(trained_digits):
    return trained_digits


def top1(model, loader) -> float:
    pred, true = predict(model, loader)
    return classification_metrics(pred, true, 10)["top1"]


def test_int8_keeps_accuracy_and_round_trips(trained, tmp_path):
    model, data = trained
    example = torch.randn(4, 1, 8, 8)
    q = quantize_int8(model, example, data.val)
    assert abs(top1(model, data.test) - top1(q.module, data.test)) <= 0.02
    save_quantized(q, tmp_path)
    loaded = load_quantized(tmp_path)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), q.module(x))
    assert loaded.int8_layers == q.int8_layers


def test_int8_is_priced_as_int8(trained):
    model, data = trained
    q = quantize_int8(model, torch.randn(4, 1, 8, 8), data.val, skip=["features.0"])
    assert "features.0" not in q.int8_layers and "classifier" in q.int8_layers
    x = torch.randn(1, 1, 8, 8)
    fp32 = profile(model, x)
    mixed = profile(model, x, layer_dtypes=q.layer_dtypes)
    assert mixed.total.energy_j < 0.5 * fp32.total.energy_j
    dtypes = {layer.name: layer.dtype for layer in mixed.layers}
    assert dtypes["features.0"] == "fp32" and dtypes["features.3"] == "int8"


def test_quantize_cli_on_a_pruned_folder(tmp_path, capsys):
    import json

    from energyprune.cli import main

    pruned = tmp_path / "pruned"
    assert main(["prune", "digits_cnn", "--target-energy", "0.6", "--out", str(pruned)]) == 0
    out = tmp_path / "int8"
    code = main(
        [
            "quantize",
            str(pruned),
            "--data",
            "digits",
            "--out",
            str(out),
            "--max-acc-drop",
            "100",
            "--calibration-batches",
            "2",
        ]
    )
    assert code == 0
    report = json.loads((out / "quant_report.json").read_text())
    energy = report["estimated_energy_j"]
    assert energy["int8"] < 0.5 * energy["fp32"]
    assert {"fp32", "int8"} <= set(report["latency_ms_cpu_eager"])
    assert (out / "model.pt2").is_file() and "fp32 vs int8" in capsys.readouterr().out


def test_prune_pipeline_then_int8(tmp_path, capsys):
    import json

    from energyprune.cli import main

    code = main(
        [
            "prune",
            "digits_cnn",
            "--data",
            "digits",
            "--target-energy",
            "0.6",
            "--steps",
            "1",
            "--finetune-epochs",
            "1",
            "--max-acc-drop",
            "100",
            "--optimizer",
            "adamw",
            "--lr",
            "0.002",
            "--quantize",
            "int8",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "int8" / "quant_report.json").read_text())
    assert report["estimated_energy_j"]["int8"] < report["estimated_energy_j"]["fp32"]
    assert (tmp_path / "int8" / "model.pt2").is_file() and (tmp_path / "report.json").is_file()
