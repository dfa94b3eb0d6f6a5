"""A folder of uniform widths with layers stored as int8 / int4 holds them as torchao tensors:
``from_pretrained`` loads them quantised, with the run's own integers and scales (the same
logits), and ``load_lm`` turns them back into float weights on the same grids."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchao")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402
from energyprune.pruning.lm_bits import quantise_layers, stored_groups  # noqa: E402
from energyprune.pruning.lm_export import load_lm, save_lm  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def _stored():
    model = tiny_llama(4)
    with torch.no_grad():  # one group by hand: Q4_0's peak -0.8 is -8 steps of 0.1
        w = model.model.layers[2].mlp.down_proj.weight
        w[0, :32] = torch.linspace(-0.3, 0.3, 32)
        w[0, 0], w[0, 1] = -0.8, 0.26
    quantise_layers(model, {0: "int8", 2: "int4"})
    return model.eval()


def test_from_pretrained_loads_the_stored_layers_as_torchao_tensors_with_our_integers(tmp_path):
    model = _stored()
    logits = model(input_ids=IDS).logits
    assert save_lm(model, tmp_path) is None
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    assert config["energyprune_weight_bits"]["layers"] == {
        "model.layers.0": "int8",
        "model.layers.2": "int4",
    }
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    layers = loaded.model.layers
    w = layers[2].mlp.down_proj.weight
    assert type(w).__name__ == "IntxUnpackedToInt8Tensor"
    assert type(layers[0].self_attn.q_proj.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert type(layers[1].mlp.up_proj.weight.data) is torch.Tensor  # not stored: float
    # by hand: the peak -0.8 is -8 steps, so the scale is -0.8 / -8 = 0.1; 0.26 is 3 steps
    assert w.scale[0, 0].item() == pytest.approx(0.1)
    assert w.qdata[0, :2].tolist() == [-8, 3]
    assert w.qdata.min() >= -8 and w.qdata.max() <= 7
    q, scale = stored_groups(model.model.layers[2].mlp.down_proj.weight, "int4")
    assert torch.equal(w.qdata, q) and torch.equal(w.scale, scale)
    assert torch.equal(loaded(input_ids=IDS).logits, logits)  # the run's own rounding
    regime = Decode(1, 64)  # priced from the config's record, its dequantising not traced
    assert profile_lm(loaded, regime, "h100-sxm").energy_j == pytest.approx(
        profile_lm(model, regime, "h100-sxm").energy_j, rel=1e-12
    )


def test_load_lm_gives_float_weights_on_the_grids_and_saves_again(tmp_path):
    model = _stored()
    logits = model(input_ids=IDS).logits
    save_lm(model, tmp_path / "a")
    floats = load_lm(tmp_path / "a")
    assert all(type(p.data) is torch.Tensor for p in floats.parameters())
    assert not hasattr(floats.config, "quantization_config")
    assert torch.equal(
        floats.model.layers[2].mlp.down_proj.weight, model.model.layers[2].mlp.down_proj.weight
    )
    assert torch.equal(floats(input_ids=IDS).logits, logits)
    save_lm(floats, tmp_path / "b")  # a resumed run saves the same folder again
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b").eval()
    assert torch.equal(again(input_ids=IDS).logits, logits)
    size = (tmp_path / "b" / "model.safetensors").stat().st_size
    tiny_llama(4).save_pretrained(tmp_path / "float")
    assert size < (tmp_path / "float" / "model.safetensors").stat().st_size
