"""The one run loop, the same for every kind of model: stopped after step 1 by the stop flag
(Ctrl-C), resumed, a run ends with the same plan and the same weights as a run never
stopped, for an image classifier and for a tiny GQA Llama."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

pytest.importorskip("transformers")

from energyprune.energy.lm.regimes import Decode
from energyprune.pipeline.finetune import TrainConfig
from energyprune.pipeline.kinds import kind_for
from energyprune.pipeline.lm_kind import DecoderLM
from energyprune.pipeline.lm_prune import LMPruneConfig, lm_run_config
from energyprune.pipeline.recover import state_digest
from energyprune.pipeline.run import Hooks, RunConfig, run_kind
from energyprune.pipeline.text import TextData
from tests.tiny_lms import tiny_llama


def _image(trained):
    model, data = trained
    train = TrainConfig(epochs=1, lr=2e-3, optimizer="adamw", max_batches=4)
    cfg = RunConfig(target_energy=0.5, steps=2, train=train, max_acc_drop=100.0, bn_batches=2)
    return model, kind_for(data, cfg, "digits_cnn", None), cfg


def _lm():
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 64, (24, 1), generator=g)
    windows = (start + torch.arange(32)) % 64
    data = TextData(windows[:16], windows[16:], 32, "train", "eval")
    options = LMPruneConfig(
        target_energy=0.7,
        hardware="horowitz-45nm",
        method="width",
        finetune_steps=3,
        lr=1e-3,
        calib_windows=4,
        eval_windows=4,
        round_to=16,
        max_ppl_rise=1e6,
        steps=2,
    )
    return (
        tiny_llama(4),
        DecoderLM(data, options, Decode(1, 64), "tiny-llama"),
        lm_run_config(options),
    )


def _plan(plan) -> object:
    return plan.to_dict() if hasattr(plan, "to_dict") else dataclasses.asdict(plan)


@pytest.mark.parametrize("kind_name", ["image classifier", "decoder LM"])
def test_a_run_stopped_after_step_1_resumes_to_the_same_plan_and_weights(
    kind_name, trained_digits, tmp_path
):
    model, kind, cfg = _image(trained_digits) if kind_name == "image classifier" else _lm()
    whole = run_kind(kind, model, cfg, tmp_path / "whole", hooks=Hooks(log=lambda m: None))
    assert whole.report and [s["step"] for s in whole.report["steps"] if s["accepted"]] == [1, 2]

    def stop_after_step_1(done: int, total: int) -> None:
        if done == 1:  # as Ctrl-C: the flag is set, the next fine-tune stops after one batch
            os.kill(os.getpid(), signal.SIGINT)

    lines: list[str] = []
    hooks = Hooks(log=lines.append, on_step=stop_after_step_1)
    stopped = run_kind(kind, model, cfg, tmp_path / "split", hooks=hooks)
    assert not stopped.report and any(line.startswith("interrupted") for line in lines)
    again = Hooks(log=lines.append)
    resumed = run_kind(kind, model, cfg, tmp_path / "split", resume=True, hooks=again)
    assert any(line.startswith("resuming after step 1 of 2") for line in lines)
    assert _plan(resumed.plan) == _plan(whole.plan)
    assert state_digest(resumed.model) == state_digest(whole.model)
    assert resumed.report["steps"] == whole.report["steps"]


def test_energyprune_prune_takes_a_language_model_as_it_takes_a_cnn(tmp_path):
    import energyprune

    model, kind, _ = _lm()
    result = energyprune.prune(
        model, kind.data, 0.7, regime=Decode(1, 64), hardware="horowitz-45nm",
        method="width", finetune_steps=2, calib_windows=4, eval_windows=4, round_to=16,
        max_ppl_rise=1e6, out=tmp_path / "run",
    )  # fmt: skip
    assert result.energy_ratio <= 0.7 + 1e-3 and result.guardrail_ok
    assert (tmp_path / "run" / "checkpoint.json").is_file()  # the one loop's checkpoint
    assert model.config.num_hidden_layers == 4 and result.params_pruned < result.params_dense


def test_energyprune_prune_cuts_an_lm_once_from_an_example_batch():
    import energyprune

    model = tiny_llama(2)
    ids = {"input_ids": torch.randint(0, 64, (1, 8))}
    result = energyprune.prune(model, ids, 0.8, hardware="horowitz-45nm")  # as before: one cut
    assert result.energy_ratio <= 0.8 * 1.01
