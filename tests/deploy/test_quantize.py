"""int8 post-training quantisation: round trip, pricing, mixed precision."""

from __future__ import annotations

import pytest
import torch

from energyprune.energy.pricing.estimates import profile
from energyprune.pipeline.evaluate import classification_metrics, predict

pytest.importorskip("torchao")

from energyprune.deploy.quantize import (
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
            "--seconds",
            "0.05",
            "--windows",
            "2",
        ]
    )
    assert code == 0
    report = json.loads((out / "quant_report.json").read_text())
    energy = report["estimated_energy_j"]
    assert energy["int8"] < 0.5 * energy["fp32"]
    assert {"fp32", "int8"} <= set(report["measurement"]["latency_p50_ms"])
    assert report["measurement"]["mode"] == "torch.compile (Inductor, freezing)"
    assert (out / "model.pt2").is_file() and "fp32 vs int8" in capsys.readouterr().out
    # the folder carries the mixed-precision plan and the float twin
    plan = json.loads((out / "plan.json").read_text())
    assert plan["precision"] == dict.fromkeys(report["int8_layers"], "int8")
    assert plan["rounds"] == json.loads((pruned / "plan.json").read_text())["rounds"]

    # `measure` on the int8 folder: int8 vs its float twin, both measured the same way
    args = ["--seconds", "0.05", "--windows", "2", "--idle", "0", "--warmup", "0.05"]
    args += ["--batch-size", "16", "--json", str(tmp_path / "m.json")]
    assert main(["measure", str(out), *args]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["int8"]["batch_size"] == result["fp32"]["batch_size"] == 16
    assert result["mode"] == "eager" and result["verdict"] in capsys.readouterr().out.replace(
        "\n", ""
    )
    est = {k: result[k]["estimate"]["joules_per_sample"] for k in ("fp32", "int8")}
    assert est["int8"] < 0.5 * est["fp32"]
    assert main(["measure", str(out), "--dtype", "fp16"]) == 2
    assert "int8 (PT2E) model: --dtype" in capsys.readouterr().err


def test_int8_loads_in_a_fresh_interpreter(trained, tmp_path):
    """Loading must register the quantized ops itself (a new process has not quantised)."""
    import subprocess
    import sys

    model, data = trained
    q = quantize_int8(model, torch.randn(4, 1, 8, 8), data.val, max_batches=2)
    save_quantized(q, tmp_path)
    x = torch.randn(2, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(q.module(x), tmp_path / "y.pt")
    code = (
        "import sys, torch\n"
        "from energyprune.deploy.quantize import load_quantized\n"
        "d = sys.argv[1]\n"
        "m = load_quantized(d).module\n"
        "x = torch.load(d + '/x.pt', weights_only=True)\n"
        "y = torch.load(d + '/y.pt', weights_only=True)\n"
        "assert torch.equal(m(x), y)\n"
        "import torch._inductor.config as inductor\n"  # the x86 int8 fusion passes, or compiled
        "assert inductor.pre_grad_custom_pass is not None\n"  # int8 runs dequantize + fp32
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_quantisation_aware_training_path(trained):
    model, data = trained
    calls = []

    def train(fake_quantised):
        calls.append(fake_quantised.training)
        from energyprune.pipeline.finetune import TrainConfig, finetune

        finetune(
            fake_quantised,
            data.train,
            TrainConfig(epochs=1, lr=1e-4, optimizer="adamw", max_batches=3),
        )

    q = quantize_int8(model, torch.randn(4, 1, 8, 8), data.train, max_batches=2, train=train)
    assert calls == [True] and not q.module.training
    assert top1(q.module, data.test) >= top1(model, data.test) - 0.03


def test_guardrail_tries_qat_then_mixed_precision_then_refuses(trained, monkeypatch):
    """Order of the fallbacks (the int8 conversions are stubbed: this checks the decisions)."""
    from energyprune.deploy.quantize import QuantizedModel
    from energyprune.errors import ConfigError
    from energyprune.pipeline import int8 as int8_step

    model, data = trained
    layers = ["features.0", "features.3", "features.7", "features.10", "classifier"]
    calls = []

    def fake_quantize(model, example, calibration, *, skip=(), max_batches=8, train=None):
        if train is not None:
            train(model)
        calls.append(("qat" if train else "ptq", tuple(skip)))
        return QuantizedModel(model, [n for n in layers if n not in skip], list(skip))

    tuned = []
    monkeypatch.setattr(int8_step, "quantize_int8", fake_quantize)
    monkeypatch.setattr(int8_step, "finetune", lambda m, loader, cfg: tuned.append(cfg))
    with pytest.raises(ConfigError, match="even with 4 layers in float"):
        int8_step.int8_with_guardrail(model, data, "digits_cnn", max_acc_drop=-1.0)
    assert tuned == [int8_step.QAT]
    assert calls[:2] == [("ptq", ()), ("qat", ())]
    kept = [skip for kind, skip in calls if kind == "ptq" and len(skip) > 0]
    assert kept[-1] == tuple(layers[:4])  # one more float layer per round, never all five


@pytest.mark.parametrize(
    ("p50", "joules", "recommended", "word"),
    [
        ({"fp32": 2.0, "int8": 1.0}, None, True, "recommended"),
        ({"fp32": 2.0, "int8": 1.0}, {"fp32": 1.0, "int8": 0.5}, True, "0.50×"),
        ({"fp32": 2.0, "int8": 1.0}, {"fp32": 1.0, "int8": 1.2}, False, "costlier"),
        ({"fp32": 1.0, "int8": 2.0}, None, False, "slower"),
        ({"fp32": 1.0, "int8": 2.0}, {"fp32": 1.0, "int8": 3.0}, False, "slower and costlier"),
    ],
)
def test_int8_verdict(p50, joules, recommended, word):
    from energyprune.pipeline.int8 import int8_verdict

    ok, text = int8_verdict(p50, joules, "eager, batch 1")
    assert ok is recommended and word in text


def test_prune_pipeline_then_int8(tmp_path, capsys):
    import json

    from energyprune.cli import main

    args = (
        "prune digits_cnn --data digits --target-energy 0.6 --steps 1 --finetune-epochs 1 "
        "--max-acc-drop 100 --optimizer adamw --lr 0.002 --quantize int8 --eager "
        "--seconds 0.05 --windows 2 --out"
    )
    code = main([*args.split(), str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "int8" / "quant_report.json").read_text())
    assert report["estimated_energy_j"]["int8"] < report["estimated_energy_j"]["fp32"]
    assert (tmp_path / "int8" / "model.pt2").is_file() and (tmp_path / "report.json").is_file()


def test_loading_an_int8_program_never_unpickles(tmp_path):
    """torch.export.load would fall back to full unpickling; inside the loader it cannot."""
    import io
    import pickle

    import torch.export.pt2_archive._package as package

    from energyprune.deploy.quantize import _weights_only
    from energyprune.errors import ConfigError

    buffer = io.BytesIO()
    torch.save({"obj": _Evil()}, buffer)
    with _weights_only():
        buffer.seek(0)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(buffer, weights_only=False)
        with pytest.raises(ConfigError, match="refusing to unpickle"):
            package.pickle.loads(pickle.dumps(_Evil()))
    buffer.seek(0)
    assert isinstance(torch.load(buffer, weights_only=False)["obj"], _Evil)  # restored after


class _Evil:
    """Stands in for an object a tampered archive would ask to unpickle."""
