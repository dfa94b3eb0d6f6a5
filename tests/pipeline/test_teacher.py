"""The distillation teacher is the dense model, frozen: no fine-tune of any schedule may change
its weights, its batch-norm running statistics or its mode."""

from __future__ import annotations

import copy

import pytest
import torch

from energyprune.pipeline import steps
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pipeline.recover import Teacher
from energyprune.pipeline.run import QUIET, RunConfig, run

QUICK = TrainConfig(epochs=1, lr=5e-3, optimizer="adamw", max_batches=6)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("schedule", ["gradual", "cubic"])
def test_teacher_is_bitwise_unchanged_by_every_fine_tune(
    trained_digits, tmp_path, monkeypatch, schedule
):
    dense, data = trained_digits
    model = copy.deepcopy(dense)
    before = _state(model)
    seen: list[tuple[bool, dict[str, torch.Tensor]]] = []
    original = steps.finetune

    def spy(student, loader, cfg, *, teacher=None, **kw):
        done = original(student, loader, cfg, teacher=teacher, **kw)
        seen.append((teacher.training, _state(teacher)))  # the teacher as the next call sees it
        return done

    monkeypatch.setattr(steps, "finetune", spy)
    cfg = RunConfig(target_energy=0.6, steps=1, schedule=schedule, train=QUICK, max_acc_drop=100.0)
    run(model, data, cfg, tmp_path, arch="digits_cnn", hooks=QUIET)
    assert seen, "no fine-tune ran"
    for training, state in seen:
        assert not training
        assert _bitwise_equal(state, before)  # weights and running statistics alike
    assert _bitwise_equal(_state(model), before)  # the caller's model is not touched either


def test_teacher_check_catches_a_change():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    teacher = Teacher(net)
    teacher.check()
    assert teacher.module is not net and not teacher.module.training
    assert not any(p.requires_grad for p in teacher.module.parameters())
    teacher.module[1].running_mean += 1e-6
    with pytest.raises(RuntimeError, match="statistics changed"):
        teacher.check()
    teacher.module[1].running_mean -= 1e-6
    teacher.module.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        teacher.check()
