"""The prune → fine-tune → evaluate loop: report schema, guardrail, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from energyprune.errors import ConfigError
from energyprune.models.architectures import digits_cnn
from energyprune.pipeline.data import load_data
from energyprune.pipeline.driver import run_and_write
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.run import QUIET, Hooks, RunConfig, schedule_targets

FAST = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw", weight_decay=1e-4)


@pytest.fixture
def trained(trained_digits):
    return trained_digits


def test_schedules_end_at_the_target():
    linear = schedule_targets(RunConfig(target_energy=0.4, steps=4, schedule="linear"))
    cubic = schedule_targets(RunConfig(target_energy=0.4, steps=4, schedule="cubic"))
    assert linear == pytest.approx([0.85, 0.7, 0.55, 0.4])
    assert cubic[-1] == pytest.approx(0.4) and cubic[0] < linear[0]  # big steps first


def test_report_schema(trained, tmp_path):
    model, data = trained
    cfg = RunConfig(target_energy=0.6, steps=2, train=FAST, max_acc_drop=100.0)
    result = run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    report = json.loads((tmp_path / "report.json").read_text())
    for side in ("before", "after"):
        entry = report[side]
        for key in ("top1", "precision", "recall", "f1"):
            assert 0.0 <= entry[key] <= 1.0
        for key in ("energy_j", "latency_ms", "macs", "params"):
            assert entry[key] > 0
        assert entry["energy_measured"] is False
    ratio = report["after"]["energy_j"] / report["before"]["energy_j"]
    assert report["energy_reduction"] == pytest.approx(1 - ratio)
    assert report["accuracy_drop"] == pytest.approx(
        100 * (report["before"]["top1"] - report["after"]["top1"])
    )
    assert ratio <= 0.6 * 1.01 and len(report["steps"]) == 2
    for name in (
        "report.md",
        "energy_layers.png",
        "accuracy_energy.png",
        "plan.json",
        "model.safetensors",
        "profile_before.json",
        "profile_after.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert "Energy reduction rate" in (tmp_path / "report.md").read_text()
    assert result.model is not model


def test_resume_refuses_another_validation_split(trained, tmp_path):
    model, data = trained
    cfg = RunConfig(target_energy=0.6, steps=2, train=TrainConfig(epochs=0), max_acc_drop=100.0)
    run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    assert (tmp_path / "checkpoint.json").is_file()
    other = load_data("digits", seed=0, val_from="test")
    with pytest.raises(ConfigError, match="resume with the same --val-from and --seed"):
        run_and_write(
            model, other, cfg, tmp_path, arch="digits_cnn", resume=True, hooks=Hooks(log=print)
        )
    again = run_and_write(
        model, data, cfg, tmp_path, arch="digits_cnn", resume=True, hooks=Hooks(log=print)
    )
    assert again is not None and again.report["validation"] == data.val_source


def test_guardrail_rolls_back_and_stops(trained, tmp_path):
    model, data = trained
    cfg = RunConfig(
        target_energy=0.2,
        steps=1,
        train=TrainConfig(epochs=1, max_batches=1, lr=1e-6),  # trained, so not refused up front
        max_acc_drop=0.0,
        retries=1,
        bn_batches=0,  # recalibrated statistics can put a small cut above the dense model
    )
    result = run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    steps = result.report["steps"]
    assert [s["accepted"] for s in steps] == [False, False]
    assert steps[1]["target_fraction"] > steps[0]["target_fraction"]  # retried smaller
    assert "guardrail" in result.report["stopped_early"]
    assert result.report["after"]["macs"] == result.report["before"]["macs"]  # dense kept


def test_a_guardrail_no_untrained_step_can_pass_is_refused_up_front(trained, tmp_path, capsys):
    from energyprune.cli import main

    model, data = trained
    cfg = RunConfig(
        target_energy=0.2, steps=1, train=TrainConfig(epochs=0), max_acc_drop=0.0, bn_batches=0
    )
    with pytest.raises(ConfigError, match="no step can pass the guardrail without training"):
        run_and_write(model, data, cfg, tmp_path / "api", arch="digits_cnn", hooks=QUIET)
    assert not (tmp_path / "api").exists()
    from safetensors.torch import save_file

    weights = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    argv = ["prune", "digits_cnn", "--weights", str(weights), "--data", "digits"]
    argv += [
        "--target-energy",
        "0.2",
        "--steps",
        "1",
        "--finetune-epochs",
        "0",
        "--max-acc-drop",
        "0",
        "--bn-batches",
        "0",
    ]
    argv += ["--out", str(tmp_path / "cli")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-acc-drop 0.0 pt" in err[0] and "--finetune-epochs" in err[0]


def _cli(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "energyprune.cli",
        "prune",
        "digits_cnn",
        "--data",
        "digits",
        "--target-energy",
        "0.5",
        "--steps",
        "3",
        "--finetune-epochs",
        "1",
        "--max-acc-drop",
        "100",
        "--optimizer",
        "adamw",
        "--lr",
        "0.002",
        "--out",
        str(out),
        *extra,
    ]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # both runs start from the same trained weights, distil from them and recalibrate BN
    model, _ = _trained_weights(tmp_path)
    full, killed = tmp_path / "full", tmp_path / "killed"
    flags = ("--weights", str(model), "--distill", "--bn-batches", "5")
    subprocess.run(_cli(full, *flags), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        _cli(killed, *flags),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = killed / "checkpoint.json"
    deadline = time.time() + 900  # a busy machine is slow, never wrong
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["completed"] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "report.json").exists()
    subprocess.run(_cli(killed, *flags, "--resume"), check=True, env=env, capture_output=True)
    a = json.loads((full / "report.json").read_text())
    b = json.loads((killed / "report.json").read_text())
    assert a["config"]["distill"] is True and b["config"]["distill"] is True
    for key in ("top1", "precision", "recall", "f1", "energy_j", "macs", "params"):
        assert a["after"][key] == b["after"][key], key
    for key in ("val_top1", "val_top1_before_bn", "val_top1_after_bn"):
        assert [s[key] for s in a["steps"]] == [s[key] for s in b["steps"]], key


def _trained_weights(tmp_path: Path) -> tuple[Path, None]:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    data = load_data("digits", batch_size=64)
    model = digits_cnn()
    finetune(model, data.train, TrainConfig(epochs=5, lr=3e-3, optimizer="adamw"))
    path = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, None


def test_ddp_fine_tuning_under_torchrun(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [str(torchrun), "--nproc-per-node", "2", "-m", *_cli(tmp_path, "--ddp")[1:]]
    args[args.index("--steps") + 1] = "1"
    proc = subprocess.run(
        args,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["energy_reduction"] > 0.4 and len(report["steps"]) == 1


def test_a_resumed_run_never_divides_a_measurement_by_an_estimate():
    """The dense figures come from the checkpoint: measured there, only estimated now (the meter
    went away), the reduction is taken between the estimates and labelled so."""
    from energyprune.energy.quantity import Estimated, Measured
    from energyprune.pipeline.evaluate import Metrics
    from energyprune.pipeline.image_kind import _energy_ratio

    def metrics(energy, estimate):
        return Metrics(0.9, 0.9, 0.9, 0.9, energy, estimate, 1.0, 10, 10, 100, [[1]])

    est = Estimated(4.0, "horowitz-45nm")
    before = metrics(Measured(10.0, "nvml", 5, 0.1), est).to_dict()
    after = metrics(Estimated(1.0, "horowitz-45nm"), Estimated(1.0, "horowitz-45nm"))
    assert _energy_ratio(before, after) == (0.25, "estimated (horowitz-45nm)")
    measured_after = metrics(Measured(5.0, "nvml", 5, 0.1), Estimated(1.0, "horowitz-45nm"))
    assert _energy_ratio(before, measured_after) == (0.5, "measured (nvml, gross)")
    old = {"energy_j": 10.0, "energy_measured": True, "energy_estimated_j": 4.0}
    old["hardware"] = "horowitz-45nm"
    assert _energy_ratio(old, after)[0] == 0.25  # a checkpoint from before the typed figures


class _Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after the raise runs."""


def test_a_kill_in_step_1_keeps_the_dense_baseline_for_resume(trained, tmp_path, monkeypatch):
    import energyprune.pipeline.image_kind as run_module
    import energyprune.pipeline.steps as steps_module

    model, data = trained
    cfg = RunConfig(target_energy=0.6, steps=1, train=TrainConfig(epochs=1), max_acc_drop=100.0)

    def killed(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(steps_module, "finetune", killed)
    with pytest.raises(_Killed):
        run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["completed"] == 0 and state["before"]["top1"] > 0.5
    assert state["config"]["target_energy"] == 0.6
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="made from other weights"):  # not that baseline
        run_and_write(digits_cnn(), data, cfg, tmp_path, arch="digits_cnn", resume=True)
    calls = []
    for name in ("_metrics", "_val_top1"):
        original = getattr(run_module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(run_module, name, counted)
    lines = []
    result = run_and_write(
        model, data, cfg, tmp_path, arch="digits_cnn", resume=True, hooks=Hooks(log=lines.append)
    )
    assert calls.count("_metrics") == 1  # the final model's: the dense one was checkpointed
    assert calls.count("_val_top1") == 2  # step 1's guardrail, the final model's check
    assert result.report["before"]["top1"] == state["before"]["top1"]
    assert lines[0].startswith("resuming after step 0 of 1")


def test_output_to_a_file_shows_progress_and_a_kill_in_step_1_resumes(tmp_path):
    """As CI, nohup and cluster jobs run it: stdout is a file, then SIGKILL during step 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    weights, _ = _trained_weights(tmp_path)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    argv = [*_cli(out, "--weights", str(weights)), "--steps", "1", "--finetune-epochs", "40"]
    argv += ["--final-epochs", "1"]
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.time() + 900  # a busy machine is slow, never wrong
        while time.time() < deadline and proc.poll() is None:
            if "step 1/1 fine-tune · epoch 2 " in log.read_text():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    before_kill = log.read_text().splitlines()
    assert before_kill[0] == "dense baseline: evaluating digits_cnn on validation and test"
    assert before_kill[1].startswith("dense baseline: val top-1")
    assert before_kill[1].endswith(f"checkpointed in {out / 'checkpoint.json'}")  # one line
    assert before_kill[2] == "step 1/1 attempt 0: cutting to 0.500 of dense energy"
    assert before_kill[3].startswith("step 1/1 fine-tune · epoch 1 · batch 1/")
    assert json.loads((out / "checkpoint.json").read_text())["completed"] == 0
    resumed = subprocess.run(
        [*argv, "--resume"], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert resumed.startswith("resuming after step 0 of 1 (dense baseline from")
    assert "dense baseline: evaluating" not in resumed
    report = json.loads((out / "report.json").read_text())
    assert (
        report["before"]["top1"]
        == json.loads((out / "checkpoint.json").read_text())["before"]["top1"]
    )
