"""Pruning a tiny random GQA Llama to a J/token budget: the budget holds when re-priced, the
model runs and round-trips, the energy criterion cuts a layer that does nothing first, recovery
lowers perplexity, and the guardrail fails a run that rose too far."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402
from energyprune.pipeline.lm_prune import (  # noqa: E402
    ENERGY_CANDIDATES,
    GREEDY,
    METHODS,
    LMPruneConfig,
    ppl_guardrail,
    prune_lm,
)
from energyprune.pipeline.text import TextData, perplexity, read_windows  # noqa: E402
from tests.tiny_lms import CharTokenizer, tiny_llama  # noqa: E402

REGIME = Decode(1, 256)


def _llama(layers: int = 4):
    return tiny_llama(layers)


def _data() -> TextData:
    g = torch.Generator().manual_seed(0)
    # a learnable stream: each token is the previous one plus 1 (mod 64), with some noise
    start = torch.randint(0, 64, (40, 1), generator=g)
    windows = (start + torch.arange(32)) % 64
    return TextData(windows[:32], windows[32:], 32, "train", "eval")


def test_the_budget_holds_when_re_priced_and_the_model_round_trips(tmp_path):
    model = _llama()
    cfg = LMPruneConfig(target_energy=0.7, hardware="h100-sxm", finetune_steps=0,
                        calib_windows=4, eval_windows=4, round_to=16)  # fmt: skip
    result = prune_lm(model, _data(), REGIME, cfg)
    dense = profile_lm(model, REGIME, "h100-sxm").energy_j
    assert profile_lm(result.model, REGIME, "h100-sxm").energy_j / dense <= 0.7 + 1e-3
    assert result.params_pruned < result.params_dense
    config = result.model.config
    assert config.num_attention_heads % config.num_key_value_heads == 0
    assert model.config.num_hidden_layers == 4  # the input model is left alone
    result.model.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=2)
    if not getattr(config, "per_layer_widths", None):
        result.model.save_pretrained(tmp_path)
        loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
        ids = torch.randint(0, 64, (1, 8))
        with torch.no_grad():
            assert torch.equal(result.model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def _identity_layer(model, i: int):
    layer = model.model.layers[i]
    for p in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
        torch.nn.init.zeros_(p)
    return model


def test_depth_drops_a_layer_that_does_nothing_first():
    """On the datasheet profile one layer of four meets 0.85 (the calibrated h100-sxm adds the
    host's time per step, which no layer drop saves, so there it takes two)."""
    cfg = LMPruneConfig(target_energy=0.85, finetune_steps=0, calib_windows=4, eval_windows=4,
                        round_to=16, method="depth", hardware="h100-sxm-datasheet")  # fmt: skip
    result = prune_lm(_identity_layer(_llama(), 2), _data(), REGIME, cfg)
    assert result.plan["drop_layers"] == [2]


def test_the_energy_criterion_keeps_the_plan_with_least_calibration_loss():
    cfg = LMPruneConfig(target_energy=0.85, finetune_steps=0, calib_windows=4, eval_windows=4,
                        round_to=16)  # fmt: skip
    result = prune_lm(_identity_layer(_llama(), 2), _data(), REGIME, cfg)
    plan = result.plan
    assert plan["sensitivity"]["layer"][2] == pytest.approx(0.0, abs=1e-6)  # an identity layer
    met = {k: v for k, v in plan["candidates"].items() if v["energy_ratio"] <= 0.85 + 1e-3}
    assert set(plan["candidates"]) == {*ENERGY_CANDIDATES, GREEDY} and plan["chosen"] in met
    assert met[plan["chosen"]]["calib_loss"] == min(v["calib_loss"] for v in met.values())
    assert plan["candidates"][plan["chosen"]]["energy_ratio"] == result.energy_ratio


def test_recovery_lowers_perplexity_after_the_cut():
    model = _llama(2)
    data = _data()
    cfg = LMPruneConfig(target_energy=0.6, finetune_steps=30, lr=3e-3, calib_windows=4,
                        eval_windows=8, round_to=16)  # fmt: skip
    result = prune_lm(model, data, REGIME, cfg)
    assert result.ppl_recovered.value < result.ppl_cut.value
    assert result.ppl_recovered.windows == result.ppl_cut.windows == result.ppl_dense.windows == 8
    assert len(result.losses) == 30


def test_the_perplexity_guardrail():
    assert ppl_guardrail(20.0, 21.0, 10)[0] is True
    held, why = ppl_guardrail(20.0, 25.0, 10)
    assert held is False and "FAILED" in why and "+25.0 %" in why
    model = _llama(2)
    cfg = LMPruneConfig(target_energy=0.5, finetune_steps=0, max_ppl_rise=0.0,
                        calib_windows=4, eval_windows=4, round_to=16)  # fmt: skip
    result = prune_lm(model, _data(), REGIME, cfg)
    attempts = result.report["steps"]  # every attempt, each a smaller cut, fails: dense is kept
    assert len(attempts) == 3 and not any(a["accepted"] for a in attempts)
    assert all(a["val_ppl_rise_pct"] > 0 for a in attempts)
    fractions = [a["target_fraction"] for a in attempts]
    assert fractions == sorted(fractions) and fractions[0] == pytest.approx(0.5)
    assert "guardrail failed after 3 attempts" in result.report["stopped_early"]
    assert result.energy_ratio == 1.0 and result.guardrail_ok is False
    assert not result.report["outcome"]["budget_met"]


def test_text_windows_and_perplexity(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefgh" * 10)
    windows = read_windows(str(path), CharTokenizer(), 16)
    assert windows.shape == (5, 16)  # 80 tokens, non-overlapping windows, the tail dropped
    ppl = perplexity(_llama(1), windows, limit=3)
    assert ppl.windows == 3 and ppl.tokens == 3 * 15 and ppl.value > 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_yields_a_model_that_runs_with_valid_heads(method):
    cfg = LMPruneConfig(target_energy=0.8, finetune_steps=2, lr=1e-3, calib_windows=2,
                        eval_windows=2, round_to=16, method=method)  # fmt: skip
    result = prune_lm(_llama(), _data(), REGIME, cfg)
    config = result.model.config
    assert config.num_attention_heads % config.num_key_value_heads == 0
    result.model.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=2)
    if method.startswith("wanda"):  # zeros survive recovery; no saving without sparse kernels
        down = result.model.model.layers[0].mlp.down_proj.weight
        assert float((down == 0).float().mean()) == pytest.approx(0.5)
        assert result.energy_ratio == pytest.approx(1.0)
    elif method in ("width", "torch-pruning"):  # at batch 1 launches dominate: widths may not
        assert result.energy_ratio < 1.0  # reach the budget, but they never cost more
    elif method in ("int8", "int4"):  # the format's one point, whatever the budget
        assert config.energyprune_weight_bits["layers"]
        assert set(config.energyprune_weight_bits["layers"].values()) == {method}
        assert result.energy_ratio < 1.0
    else:
        assert result.energy_ratio <= 0.8 + 1e-3
