"""Bits as a cut (issue 37): a decoder layer rounded to int8 or int4 per group of 32 weights,
recorded in the config, priced as stored, and kept through save and from_pretrained."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchao")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402
from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.lm_bits import GROUP, fake_quantise, quantise_layers  # noqa: E402
from energyprune.pruning.lm_export import save_lm  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def test_a_group_holds_at_most_its_format_s_levels_and_rounds_to_nearest():
    w = torch.randn(8, 4 * GROUP, generator=torch.Generator().manual_seed(1))
    for dtype, levels in (("int8", 256), ("int4", 16)):
        q = fake_quantise(w, dtype)
        groups = q.view(8, 4, GROUP)
        assert all(len(g.unique()) <= levels for g in groups.reshape(-1, GROUP))
        # symmetric, one step per group: the group's largest |w| over half the integer range
        # (127.5 for int8, 7.5 for int4); rounding to nearest moves a weight by <= half a step
        step = w.view(8, 4, GROUP).abs().amax(dim=2, keepdim=True) / ((levels - 1) / 2)
        assert ((groups - w.view(8, 4, GROUP)).abs() <= step / 2 + 1e-6).all()
        assert (((groups / step) - (groups / step).round()).abs() < 1e-3).all()  # on the grid
    assert (fake_quantise(w, "int8") - w).abs().mean() < (fake_quantise(w, "int4") - w).abs().mean()
    with pytest.raises(ConfigError, match="not whole groups of 32"):
        fake_quantise(torch.randn(4, 40), "int4")


def test_quantised_layers_are_recorded_priced_as_stored_and_saved(tmp_path):
    model = tiny_llama(4)
    dense_logits = model(input_ids=IDS).logits
    quantise_layers(model, {0: "int8", 2: "int4"})
    assert model.config.energyprune_weight_bits == {
        "group_size": 32,
        "layers": {"model.layers.0": "int8", "model.layers.2": "int4"},
    }
    logits = model(input_ids=IDS).logits
    assert not torch.equal(logits, dense_logits)
    assert (logits - dense_logits).abs().max() < 0.5 * dense_logits.abs().max()
    stored = (("model.layers.0", "int8"), ("model.layers.2", "int4"))
    by_config = profile_lm(model, Decode(1, 64), "h100-sxm")
    by_hand = profile_lm(
        tiny_llama(4), Decode(1, 64), "h100-sxm", layer_weights=stored, group_size=32
    )
    assert by_config.energy_j == pytest.approx(by_hand.energy_j, rel=1e-12)
    assert by_config.energy_j < profile_lm(tiny_llama(4), Decode(1, 64), "h100-sxm").energy_j
    assert save_lm(model, tmp_path) is None  # widths are uniform: from_pretrained loads it
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(input_ids=IDS).logits, logits)
    assert profile_lm(loaded, Decode(1, 64), "h100-sxm").energy_j == pytest.approx(
        by_config.energy_j
    )
    with pytest.raises(ConfigError, match="layer 9 does not exist"):
        quantise_layers(model, {9: "int4"})
