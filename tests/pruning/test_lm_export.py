"""Saving pruned LMs: uniform widths load with from_pretrained; per-layer widths replay from
plan.json with the same logits (tied embeddings too); damaged plans are one line."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.decoder import group_importance  # noqa: E402
from energyprune.pruning.lm_allocate import LMPlan, LMScores, apply_plan, mlp_scores  # noqa: E402
from energyprune.pruning.lm_export import load_lm, save_lm  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(0))


def _cut(model, plan: LMPlan):
    scores = LMScores([1.0] * 4, mlp_scores(model, [IDS]), group_importance(model, [IDS]))
    apply_plan(model, plan, scores, round_to=16)
    return model


def _same_logits(a, b) -> bool:
    with torch.no_grad():
        return torch.equal(a(input_ids=IDS).logits, b(input_ids=IDS).logits)


@pytest.mark.parametrize("tied", [False, True])
def test_per_layer_widths_replay_from_the_plan(tmp_path, tied):
    model = tiny_llama(4)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model = _cut(model, LMPlan({0: 2, 2: 1}, {1: 1}, [3]))
    why = save_lm(model, tmp_path)
    assert "widths differ per layer" in why and (tmp_path / "plan.json").is_file()
    with pytest.raises(Exception):  # noqa: B017 - transformers' own shape-mismatch error
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded = load_lm(tmp_path)
    assert _same_logits(model, loaded)
    assert loaded.config.per_layer_widths == model.config.per_layer_widths
    loaded.generate(IDS, max_new_tokens=2)  # the cache follows the kept layers


def test_uniform_widths_are_a_plain_hugging_face_folder(tmp_path):
    model = _cut(tiny_llama(4), LMPlan(dict.fromkeys(range(4), 1), {}, [1]))
    (tmp_path / "plan.json").write_text("{}")  # a stale plan from an earlier save goes
    assert save_lm(model, tmp_path) is None and not (tmp_path / "plan.json").exists()
    assert _same_logits(model, transformers.AutoModelForCausalLM.from_pretrained(tmp_path))
    assert _same_logits(model, load_lm(tmp_path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda plan: "not json", "is not a valid LM plan"),
        (lambda plan: {**plan, "format": "x"}, "is not a valid LM plan"),
        (lambda plan: {**plan, "widths": {"intermediate_size": [1]}}, "another number of layers"),
        (lambda plan: {**plan, "widths": {"intermediate_size": [16, 16, 16]}}, "does not fit"),
    ],
)
def test_a_damaged_plan_is_one_line(tmp_path, damage, message):
    save_lm(_cut(tiny_llama(3), LMPlan({0: 1}, {}, [])), tmp_path)
    path = tmp_path / "plan.json"
    damaged = damage(json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    with pytest.raises(ConfigError, match=message) as info:
        load_lm(tmp_path)
    assert "\n" not in str(info.value)


def test_a_head_count_the_config_class_refuses_replays_from_the_plan(tmp_path):
    """Six query heads of 8 in a hidden size of 64: transformers' Llama config refuses the
    count (64 % 6), so the folder keeps a count it accepts and plan.json the real one."""
    model = _cut(tiny_llama(4), LMPlan({}, dict.fromkeys(range(4), 1), []))
    assert model.config.num_attention_heads == 6
    why = save_lm(model, tmp_path)
    assert why is not None and "6 query heads" in why and (tmp_path / "plan.json").is_file()
    assert model.config.num_attention_heads == 6  # the model in memory is left as it was
    loaded = load_lm(tmp_path)
    assert _same_logits(model, loaded)
