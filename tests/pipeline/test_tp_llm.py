"""The ``torch-pruning`` LM arm runs Torch-Pruning's own LLM recipe (MetaPruner, L2 group
magnitude, whole heads, the hidden size cut too, ``round_to=4``) at the smallest ratio that
meets the budget, and says so when no ratio does."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Prefill  # noqa: E402
from energyprune.pipeline.lm_prune import METHODS, LMPruneConfig  # noqa: E402
from energyprune.pipeline.text import TextData  # noqa: E402
from energyprune.pruning.decoder import attention_layers  # noqa: E402
from energyprune.pruning.lm_allocate import BUDGET_SLACK  # noqa: E402
from energyprune.pruning.lm_export import load_lm, save_lm  # noqa: E402
from energyprune.pruning.tp_llm import RECIPE, max_head_ratio, tp_llm_prune  # noqa: E402
from energyprune.reports.lm import describe_lm_plan  # noqa: E402

# prompts priced per token: compute-bound enough that widths show in J/token (at batch-1
# decode a model this small is all kernel launches)
REGIME = Prefill(8, 512)


def _llama(heads: int = 8, kv: int = 2, head_dim: int = 32, **more):
    """A small GQA Llama, wide enough that its widths cost: hidden 256, 8 query heads of 32
    over 2 KV heads, MLP 512."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=heads * head_dim, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
        pad_token_id=0, bos_token_id=0, eos_token_id=0, **more,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _data() -> TextData:
    g = torch.Generator().manual_seed(0)
    windows = (torch.randint(0, 64, (8, 1), generator=g) + torch.arange(32)) % 64
    return TextData(windows[:4], windows[4:], 32, "train", "eval")


def _cut(dense, target: float):
    cfg = LMPruneConfig(target_energy=target, finetune_steps=0, calib_windows=1, eval_windows=1)

    def price(model):
        return profile_lm(model, REGIME, "h100-sxm")

    cut = METHODS["torch-pruning"](dense, _data(), None, price, cfg)
    priced = price(cut.model).energy_j / price(dense).energy_j
    assert priced == pytest.approx(cut.ratio)  # the ratio it reports is the re-priced one
    return cut


def test_the_recipe_meets_the_budget_with_the_hidden_size_cut_and_round_trips(tmp_path):
    dense = _llama()
    cut = _cut(dense, 0.7)
    assert cut.ratio <= 0.7 + BUDGET_SLACK
    plan, config = cut.plan, cut.model.config
    assert plan["recipe"] == RECIPE and plan["met"] is True and plan["reached"] == cut.ratio
    assert 0 < plan["pruning_ratio"] < 0.9
    assert config.hidden_size == plan["hidden_size"] < 256  # the hidden size was pruned
    assert config.intermediate_size == plan["intermediate_size"] < 512
    assert dense.config.hidden_size == 256  # the dense model is left alone
    model = cut.model
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert embed.weight.shape[1] == head.in_features == config.hidden_size
    widths = [config.hidden_size, config.intermediate_size]
    for attn in attention_layers(model):
        m = attn.module
        widths += [m.q_proj.out_features, m.k_proj.out_features, m.o_proj.out_features]
        assert m.q_proj.in_features == m.o_proj.out_features == config.hidden_size
        assert m.q_proj.out_features == config.num_attention_heads * config.head_dim
        assert m.k_proj.out_features == config.num_key_value_heads * config.head_dim == 64
    assert all(w % 4 == 0 for w in widths)  # round_to=4
    assert config.num_attention_heads % config.num_key_value_heads == 0
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        assert logits.shape == (2, 8, 64)
        assert save_lm(model, tmp_path) is None  # uniform widths: a plain HF folder
        loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded(input_ids=ids).logits, logits)
        assert torch.equal(load_lm(tmp_path)(input_ids=ids).logits, logits)
    assert "Torch-Pruning examples/LLMs" in describe_lm_plan(plan)


def test_an_unreachable_budget_is_reported_not_met():
    cut = _cut(_llama(), 0.01)
    assert cut.plan["met"] is False and cut.plan["pruning_ratio"] == 0.9
    assert cut.plan["reached"] == cut.ratio and 0.01 < cut.ratio < 1
    assert "out of its reach" in describe_lm_plan(cut.plan)


def test_the_head_ratio_stops_where_torch_pruning_would_skip_the_heads():
    (attn, *_) = attention_layers(_llama())  # 8 query heads over 2 KV heads: 2 must stay each
    assert max_head_ratio(attn) == pytest.approx(0.5)


def test_heads_torch_pruning_cannot_rank_are_kept_and_the_hidden_size_fits_them(tmp_path):
    """SmolLM2's layout: 9 query heads of 64 over 3 KV heads (192 scores do not split in 9),
    tied embeddings; the hidden size ends a multiple of 36 so that the config validates."""
    model = _llama(9, 3, 64, tie_word_embeddings=True)
    done = tp_llm_prune(model, torch.randint(0, 64, (1, 16)), 0.3)
    config = model.config
    assert done["heads"].startswith("kept") and config.num_attention_heads == 9
    assert done["recipe_hidden_size"] == 400 and config.hidden_size == 396  # 576 x 0.7, /36
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert save_lm(model, tmp_path) is None
        loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
