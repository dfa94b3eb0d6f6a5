"""The KV cache's dtype as a cut (issue 37): K and V rounded as the cache stores them (checked
by hand), priced as stored, kept through save and load, and taken int8 before int4."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchao")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402
from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.lm_export import load_lm, save_lm  # noqa: E402
from energyprune.pruning.lm_kv import kv_sensitivity, round_kv  # noqa: E402
from energyprune.pruning.lm_plan import Cut, LMPlan, LMScores  # noqa: E402
from energyprune.pruning.lm_storage import kv_cuts, take_storage  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def _llama(layers: int = 2):
    """A random Llama whose heads are 32 wide (one group of 32 per head and token)."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _k_out(model, ids):
    seen = []
    k = model.model.layers[0].self_attn.k_proj
    handle = k.register_forward_hook(lambda m, i, o: seen.append((i[0], o.detach())))
    model(input_ids=ids)
    handle.remove()
    given, out = seen[0]
    return out, torch.nn.functional.linear(given, k.weight).detach()


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_k_is_rounded_per_head_and_token_as_llama_cpp_stores_it(dtype):
    model = _llama()
    round_kv(model, dtype)
    rounded, raw = _k_out(model, IDS[:, :4])
    # by hand: each head's 32 values of a token share one step; Q8_0's is |max| / 127,
    # Q4_0's is the value of largest |k| over -8 (so that value is exactly -8 steps)
    groups = raw.reshape(-1, 32)
    if dtype == "int8":
        step = groups.abs().amax(1, keepdim=True) / 127
        q = (groups / step).round().clamp(-128, 127)
    else:
        peak = groups.gather(1, groups.abs().argmax(1, keepdim=True))
        step = peak / -8
        q = (groups / step).round().clamp(-8, 7)
    assert torch.allclose(rounded.reshape(-1, 32), q * step, atol=1e-6)
    assert not torch.allclose(rounded, raw)
    assert model.config.energyprune_kv_cache == {"dtype": dtype}


def test_a_quantised_cache_is_priced_as_stored_and_survives_save_and_load(tmp_path):
    model = _llama()
    dense = profile_lm(model, Decode(64, 1024), "h100-sxm").energy_j
    round_kv(model, "int8")
    logits = model(input_ids=IDS).logits
    by_config = profile_lm(model, Decode(64, 1024), "h100-sxm").energy_j
    by_flag = profile_lm(_llama(), Decode(64, 1024), "h100-sxm", kv_dtype="int8").energy_j
    assert by_config == pytest.approx(by_flag, rel=1e-12) and by_config < dense
    save_lm(model, tmp_path)
    loaded = load_lm(tmp_path)
    assert torch.allclose(loaded(input_ids=IDS).logits, logits, atol=1e-6)
    round_kv(model, None)  # undone: the config forgets it, the logits are the model's again
    assert not hasattr(model.config, "energyprune_kv_cache")
    assert torch.allclose(model(input_ids=IDS).logits, _llama()(input_ids=IDS).logits)


def test_gradients_pass_straight_through_the_rounding():
    model = _llama()
    round_kv(model, "int4")
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    assert model.model.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0


def test_probes_leave_the_model_as_it_was_and_heads_too_narrow_are_refused():
    model = _llama()
    before = model(input_ids=IDS).logits

    def loss(m):
        return float(m(input_ids=IDS, labels=IDS).loss)

    rises = kv_sensitivity(model, loss)
    assert set(rises) == {"kv-int8", "kv-int4"} and rises["kv-int4"] != rises["kv-int8"]
    assert torch.equal(model(input_ids=IDS).logits, before)
    assert not hasattr(model.config, "energyprune_kv_cache")
    narrow = tiny_llama(2)  # heads of 8 values: not whole groups of 32
    assert kv_sensitivity(narrow, loss) == {"kv-int8": float("inf"), "kv-int4": float("inf")}
    with pytest.raises(ConfigError, match="whole groups of 32"):
        round_kv(narrow, "int8")
    scores = LMScores([1.0], [], [], kv=kv_sensitivity(narrow, loss))
    lm = profile_lm(narrow, Decode(64, 1024), "h100-sxm")
    assert kv_cuts(narrow, lm, scores, lambda m: profile_lm(m, Decode(64, 1024), "h100-sxm")) == []


def test_kv_cuts_price_the_cache_and_are_taken_int8_before_int4():
    model = _llama()
    regime = Decode(64, 1024)

    def price(m):
        return profile_lm(m, regime, "h100-sxm")

    lm = price(model)
    scores = LMScores([1.0, 1.0], [], [], kv={"kv-int8": 0.01, "kv-int4": 0.05})
    int8, int4 = kv_cuts(model, lm, scores, price)
    assert (int8.kind, int4.kind, int8.layer) == ("kv-int8", "kv-int4", -1)
    assert int4.importance == pytest.approx(0.04)  # the rise beyond int8's
    by_flag = (
        price(model).energy_j - profile_lm(model, regime, "h100-sxm", kv_dtype="int8").energy_j
    )
    assert int8.joules == pytest.approx(by_flag, rel=1e-9) and int4.joules > 0
    plan = LMPlan()
    assert not take_storage(plan, Cut("kv-int4", -1, 0.0, 1.0))  # int8 first
    assert take_storage(plan, int8) and take_storage(plan, int4)
    assert plan.kv == "int4" and plan.to_dict()["kv_cache"] == "int4"


def test_a_gguf_export_says_which_cache_type_to_serve_with(tmp_path):
    pytest.importorskip("gguf")
    from energyprune.pruning.gguf_export import write_gguf

    model = _llama()
    assert not any("cache-type" in n for n in write_gguf(model, tmp_path / "a.gguf").notes)
    round_kv(model, "int4")
    notes = write_gguf(model, tmp_path / "b.gguf").notes
    assert any("--cache-type-k q4_0 --cache-type-v q4_0" in n for n in notes)
