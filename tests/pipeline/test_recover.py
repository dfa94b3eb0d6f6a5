"""Accuracy recovery: BN recalibration, distillation, candidate choice, the gradual schedule."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import energyprune
from energyprune.errors import ConfigError
from energyprune.pipeline.driver import run_and_write
from energyprune.pipeline.finetune import TrainConfig, finetune
from energyprune.pipeline.recover import distillation_loss, recalibrate_bn
from energyprune.pipeline.run import QUIET, RunConfig
from energyprune.pipeline.steps import GRADUAL_EVENTS

FAST = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw", weight_decay=1e-4)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_recalibrate_bn_changes_running_stats_never_weights(trained_digits):
    model, data = trained_digits
    model = copy.deepcopy(model)
    with torch.no_grad():  # stale statistics, as after a cut
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(3.0)
    before = _state(model)
    used = recalibrate_bn(model, data.train, batches=4)
    after = _state(model)
    assert used == 4 and not model.training
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k, _ in model.named_parameters()]
    assert stats and weights
    assert all(not torch.equal(before[k], after[k]) for k in stats)
    assert all(torch.equal(before[k], after[k]) for k in weights)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_recalibrate_bn_is_the_exact_mean_over_the_batches():
    bn = nn.BatchNorm1d(3)
    net = nn.Sequential(nn.Identity(), bn)
    batches = [(torch.randn(8, 3) * (i + 1) + i, torch.zeros(8)) for i in range(3)]
    assert recalibrate_bn(net, batches, batches=2) == 2
    expected = torch.stack([x.mean(0) for x, _ in batches[:2]]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected)
    assert recalibrate_bn(nn.Sequential(nn.Linear(3, 3)), batches, 2) == 0  # no BN: no-op


def test_distillation_with_t1_alpha0_is_cross_entropy():
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    torch.testing.assert_close(
        distillation_loss(s, t, y, alpha=0.0, temperature=1.0), nn.functional.cross_entropy(s, y)
    )


@settings(max_examples=25, deadline=None)
@given(st.floats(0.5, 10.0), st.integers(2, 12))
def test_soft_term_vanishes_only_when_student_matches_teacher(temperature, classes):
    t, y = torch.randn(4, classes), torch.randint(0, classes, (4,))
    same = distillation_loss(t.clone(), t, y, alpha=1.0, temperature=temperature)
    other = distillation_loss(t + torch.randn(4, classes), t, y, alpha=1.0, temperature=temperature)
    assert abs(float(same)) < 1e-5 and float(other) > 0


def test_teacher_is_frozen_and_run_once_per_batch(trained_digits):
    teacher, data = trained_digits
    before = _state(teacher)
    student = copy.deepcopy(teacher)  # before the hook: a deep copy would carry it
    calls = []
    hook = teacher.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        finetune(student, data.train, FAST, teacher=teacher)
    finally:
        hook.remove()
    assert len(calls) == len(data.train)  # once per batch, not once per loss term
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_every_step_reports_top1_before_and_after_recalibration(trained_digits, tmp_path):
    """The two figures are the cut model's validation top-1 with the dense model's running
    statistics and with recalibrated ones: re-made here from the same cut and batches."""
    from energyprune.models.placement import example_input
    from energyprune.pipeline.evaluate import top1
    from energyprune.pipeline.run import schedule_targets
    from energyprune.pipeline.steps import _recalibrate, estimate_j, prune_step

    model, data = trained_digits
    cfg = RunConfig(target_energy=0.6, steps=2, train=FAST, max_acc_drop=100.0)
    report = run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    steps = json.loads((tmp_path / "report.json").read_text())["steps"]
    assert steps == report.report["steps"] and len(steps) == 2
    assert all(s["bn_recalibrated"] == "after the cut" for s in steps)
    first = steps[0]
    target_j = schedule_targets(cfg)[0] * estimate_j(model, data, cfg, "digits_cnn")
    cut = prune_step(model, example_input(model, data.input_shape), cfg, target_j).model
    assert first["val_top1_before_bn"] == top1(cut, data.val, data.num_classes)
    _recalibrate(cut, data, cfg, seed=cfg.seed * 100_003 + 1 * 101 + 0)  # step 1, attempt 0
    assert first["val_top1_after_bn"] == top1(cut, data.val, data.num_classes)
    assert first["val_top1_after_bn"] != first["val_top1_before_bn"]  # statistics did move
    assert report.report["config"]["distill"] is True and report.report["config"]["bn_batches"]


def test_gradual_schedule_reaches_the_target_within_one_percent(trained_digits, tmp_path):
    model, data = trained_digits
    cfg = RunConfig(target_energy=0.5, steps=1, schedule="gradual", train=FAST, max_acc_drop=100.0)
    result = run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    (step,) = result.report["steps"]
    assert step["cuts"] == GRADUAL_EVENTS
    assert abs(step["energy_fraction"] / 0.5 - 1) <= 0.01, step["energy_fraction"]
    assert abs(1 - result.report["energy_reduction"] - 0.5) <= 0.005
    loaded, _ = energyprune.load(tmp_path)  # the merged cuts replay on a fresh model
    x = torch.randn(4, *data.input_shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), result.model.cpu().eval()(x))


def test_candidates_are_scored_and_the_best_is_kept(trained_digits, tmp_path):
    model, data = trained_digits
    cfg = RunConfig(
        target_energy=0.5, steps=1, train=TrainConfig(epochs=0), max_acc_drop=100.0, candidates=3
    )
    result = run_and_write(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    (step,) = result.report["steps"]
    entries = step["candidates"]
    scored = [c for c in entries if "val_top1_after_bn" in c]
    assert len(scored) == 3  # three distinct cuts; settings repeating a cut are not scored
    settings = [
        (c["criterion"], c["strategy"], c["max_layer_ratio"], c["round_to"]) for c in entries
    ]
    assert len(set(settings)) == len(settings)
    for c in entries:
        if "same_cut_as" in c:
            assert "val_top1_after_bn" in entries[c["same_cut_as"]]
    best = max(c["val_top1_after_bn"] for c in scored)
    assert step["val_top1_after_bn"] == best
    assert all(c["energy_fraction"] <= 0.5 * 1.01 for c in scored)


def test_candidates_with_gradual_is_refused():
    with pytest.raises(ConfigError, match="one-shot"):
        RunConfig(schedule="gradual", candidates=2)
    with pytest.raises(ConfigError, match="distill_alpha"):
        TrainConfig(distill_alpha=1.5)


def test_cli_recovery_flags_reach_the_report(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "energyprune.cli", "prune", "digits_cnn", "--data", "digits"]
    common = ["--target-energy", "0.7", "--steps", "1", "--finetune-epochs", "0", "--out", str(out)]
    common += ["--max-acc-drop", "100"]  # an untrained model: the guardrail is not under test
    proc = subprocess.run(
        [*cmd, *common, "--no-distill", "--bn-batches", "3", "--candidates", "2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["distill"] is False and report["config"]["bn_batches"] == 3
    scored = [c for c in report["steps"][0]["candidates"] if "val_top1_after_bn" in c]
    assert len(scored) == 2
    bad = subprocess.run(
        [*cmd, *common, "--schedule", "gradual", "--candidates", "2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len((bad.stderr + bad.stdout).strip().splitlines()) == 1
