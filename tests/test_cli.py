"""The CLI: tables, JSON, plots, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from energyprune.cli import main
from tests.conftest import REPO

_PRUNE = ["prune", "digits_cnn", "--target-energy", "0.5", "--out", "o"]


def test_profile_builtin_with_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(
        ["profile", "resnet20", "--top", "5", "--json", str(out_json), "--plot", str(out_png)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "estimated energy" in printed and "profiled in" in printed and "layer3.2.conv2" in printed
    )
    data = json.loads(out_json.read_text())
    assert data["model"] == "resnet20" and data["estimated"] is True
    assert data["total"]["macs"] == 40_813_184 and data["input_shape"] == [1, 3, 32, 32]
    assert out_png.stat().st_size > 1000


def test_profile_fixture_weights_and_options(fixtures_dir, capsys):
    code = main(
        [
            "profile",
            "resnet56",
            "--weights",
            str(fixtures_dir / "cifar10_resnet56.safetensors"),
            "--hardware",
            "eyeriss-65nm",
            "--dtype",
            "int8",
            "--top",
            "0",
        ]
    )
    assert code == 0
    assert "eyeriss-65nm, int8" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "resnet57"], "unknown model 'resnet57'"),
        (["profile", "resnet20", "--input-shape", "1,3,x"], "malformed input shape"),
        (["profile", "resnet20", "--input-shape", "1,1,32,32"], "failed on an input of shape"),
        (["profile", "resnet20", "--hardware", "missing.yaml"], "hardware profile 'missing.yaml'"),
        (["profile", "resnet20", "--weights", "missing.safetensors"], "does not exist"),
        (["profile", "resnet20", "--top", "-1"], "--top"),
        (["profile", "resnet20", "--dtype", "fp8"], "invalid choice"),
        (["measure", str(REPO / "docs")], "is not a saved pruned model"),
        (["quantize", "digits_cnn", "--out", "q", "--measure-batch", "0"], "--measure-batch"),
        (["search", "digits_cnn", "--out", "s", "--precision", "int4"], "--precision takes"),
        # errors in the command line's words, with the fix suggested
        (["prune", "digits_cnn", "--target-energy", "50", "--out", "o"], "did you mean 0.5?"),
        ([*_PRUNE, "--max-layer-ratio", "90"], "did you mean 0.9?"),
        ([*_PRUNE, "--hardware", "horowitz45"], "did you mean horowitz-45nm?"),
        ([*_PRUNE, "--round-to", "0"], "--round-to must be >= 1"),
        ([*_PRUNE, "--data", "digits", "--bn-batches", "-1"], "--bn-batches"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative --out folders land here, and must not appear
    with pytest.raises(SystemExit) as exc:  # argparse errors exit; library errors return
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_wrong_architecture_weights_in_a_real_process(fixtures_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "energyprune.cli",
            "profile",
            "resnet20",
            "--weights",
            str(fixtures_dir / "cifar10_resnet56.safetensors"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "do not fit this architecture" in lines[0]


def test_debug_shows_the_traceback():
    with pytest.raises(Exception, match="unknown model"):
        main(["--debug", "profile", "resnet57"])


def test_measure_without_meter_says_so(tmp_path, capsys):
    out = tmp_path / "m.json"
    code = main(
        [
            "measure",
            "resnet20",
            "--device",
            "cpu",
            "--no-meter",
            "--seconds",
            "0.05",
            "--windows",
            "2",
            "--warmup",
            "0.01",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["measured"] is False and data["backend"] == "estimate"
    assert data["joules_per_sample"] is None and data["estimate"]["estimated"] is True
    assert data["latency_ms"]["p50"] > 0
    assert "NOT measured" in capsys.readouterr().out


def test_calibrate_without_meter_fails_cleanly(tmp_path, capsys):
    from energyprune.energy.measurement.meters import open_meter
    from energyprune.errors import MeterUnavailableError

    try:
        open_meter("cpu")
    except MeterUnavailableError:
        pass
    else:
        pytest.skip("this machine has a readable CPU energy meter")
    out = tmp_path / "p.yaml"
    assert main(["calibrate", "--device", "cpu", "--out", str(out)]) == 2
    assert "meter unavailable" in capsys.readouterr().err and not out.exists()


def test_prune_writes_the_four_files_and_exports(tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(["profile", "resnet20"])  # warm imports
    capsys.readouterr()
    code = main(
        ["prune", "resnet20", "--target-energy", "0.6", "--round-to", "4", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "before vs after pruning" in printed and "estimated energy" in printed
    assert {p.name for p in out.iterdir()} == {
        "plan.json",
        "model.safetensors",
        "profile_before.json",
        "profile_after.json",
    }
    plan = json.loads((out / "plan.json").read_text())
    assert plan["arch"]["name"] == "resnet20" and plan["achieved_j"] <= plan["target_j"] * 1.01
    before = json.loads((out / "profile_before.json").read_text())["total"]["energy_j"]
    after = json.loads((out / "profile_after.json").read_text())["total"]["energy_j"]
    assert after <= 0.6 * before * 1.01
    assert main(["export", str(out), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 10_000


def test_unreachable_prune_writes_nothing(tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(
        ["prune", "resnet20", "--target-energy", "0.01", "--ignore", "layer3", "--out", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "reachable minimum" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "cifar10:/no/such/archive.tar.xz"], "does not exist"),
        (["--data", "digits", "--weights", "MISSING"], "does not exist"),
        (["--data", "digits", "--ddp", "--quantize", "int8"], "drop it under --ddp"),
        (["--quantize", "auto"], "--quantize needs --data"),
        (["--data", "tests.pipeline.factories:digits_loaders", "--val-from", "test"], "factory"),
    ],
)
def test_pipeline_bad_input_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["prune", "digits_cnn", "--target-energy", "0.5", "--out", str(out), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_pipeline_class_count_and_architecture_mismatch(tmp_path, capsys, fixtures_dir):
    out = tmp_path / "run"
    code = main(
        ["prune", "resnet20", "--data", "digits", "--target-energy", "0.5", "--out", str(out)]
    )
    assert code == 2 and "cannot take digits samples" in capsys.readouterr().err
    code = main(
        [
            "prune",
            "digits_cnn",
            "--data",
            "digits",
            "--target-energy",
            "0.5",
            "--weights",
            str(fixtures_dir / "cifar10_resnet20.safetensors"),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "do not fit this architecture" in capsys.readouterr().err
    assert not out.exists()


def test_pipeline_class_count_mismatch(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "prune",
            "tests.pipeline.factories:five_class_cnn",
            "--data",
            "digits",
            "--target-energy",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "class-count mismatch" in capsys.readouterr().err and not out.exists()


def test_demo_meets_its_promise(tmp_path):
    """Energy and accuracy; its time (< 2 min on 2 cores) is benchmarks/demo_time.py's."""
    code = main(["demo", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0
    assert report["energy_reduction"] >= 0.40 and report["accuracy_drop"] <= 1.0
    assert report["validation"] == "10% of train (seed 0)"


@pytest.fixture
def nan_weights(tmp_path):
    from safetensors.torch import save_file

    from energyprune.models.zoo import build_model

    state = build_model("digits_cnn").model.state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key] = state[key].clone()
    state[key].view(-1)[3] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, key


@pytest.mark.parametrize("command", ["profile", "prune", "quantize", "search"])
def test_nan_weights_are_refused_by_every_command(command, nan_weights, tmp_path, capsys):
    path, key = nan_weights
    out = tmp_path / "out"
    argv = [command, "digits_cnn", "--weights", str(path)]
    argv += [] if command == "profile" else ["--out", str(out)]
    argv += ["--target-energy", "0.5"] if command == "prune" else []
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN/Inf" in err[0] and f"'{key}'" in err[0]
    assert not out.exists()  # nothing written
