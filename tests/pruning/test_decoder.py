"""Decoder cuts on a tiny random Llama with GQA (8 query heads sharing 2 KV heads): the forward
runs, head counts stay valid, the config describes the modules, and a uniform cut round-trips
through save_pretrained / from_pretrained with the same logits."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.decoder import (  # noqa: E402
    attention_layers,
    block_influence,
    drop_layers,
    group_importance,
    prune_kv_groups,
    prune_query_heads,
)
from energyprune.pruning.hf_config import sync_config  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402


def _llama(layers: int = 3):
    return tiny_llama(layers, vocab=97, intermediate=96)


IDS = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))


def _round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, loaded(input_ids=IDS).logits)
    return loaded


def _generates(model):
    out = model.generate(IDS, max_new_tokens=3, do_sample=False)  # through the KV cache
    assert out.shape == (2, 15)
    with torch.no_grad():  # eager attention repeats K/V by the module's own group count
        sdpa = model(input_ids=IDS).logits
        model.set_attn_implementation("eager")
        eager = model(input_ids=IDS).logits
        model.set_attn_implementation("sdpa")
    assert torch.allclose(sdpa, eager, atol=1e-5)


def test_dropping_a_kv_group_takes_its_query_heads_and_round_trips(tmp_path):
    model = _llama()
    for attn in attention_layers(model):
        prune_kv_groups(attn, keep=[1])
    sync_config(model)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 1)
    assert all(a.group_size == 4 and a.kv_heads == 1 for a in attention_layers(model))
    _generates(model)
    _round_trip(model, tmp_path)


def test_query_heads_leave_every_group_alike_and_round_trip(tmp_path):
    model = _llama()
    scores = group_importance(model, [IDS])
    assert [s.shape for s in scores] == [torch.Size([8])] * 3
    for attn, s in zip(attention_layers(model), scores, strict=True):
        prune_query_heads(attn, 2, s)
    sync_config(model)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    assert model.config.num_attention_heads % model.config.num_key_value_heads == 0
    _generates(model)
    _round_trip(model, tmp_path)


def test_the_best_query_heads_are_kept():
    model = _llama(1)
    (attn,) = attention_layers(model)
    before = attn.q.weight.detach().clone()
    scores = torch.tensor([0.0, 9, 1, 8, 7, 0, 6, 0])  # group 0: heads 1, 3 best; group 1: 4, 6
    prune_query_heads(attn, 2, scores)
    kept = torch.cat([before[h * 8 : (h + 1) * 8] for h in (1, 3, 4, 6)])
    assert torch.equal(attn.q.weight, kept)


def test_dropped_layers_are_gone_from_modules_config_and_cache(tmp_path):
    model = _llama(4)
    influence = block_influence(model, [IDS])
    assert len(influence) == 4 and all(0 <= v <= 2 for v in influence)
    drop_layers(model, [1, 2])
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    _generates(model)
    _round_trip(model, tmp_path)


def test_a_layer_that_changes_nothing_has_no_influence():
    model = _llama(2)
    layer = model.model.layers[1]
    for p in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight):
        torch.nn.init.zeros_(p)  # the residual stream passes through untouched
    influence = block_influence(model, [IDS])
    assert influence[1] == pytest.approx(0, abs=1e-6) and influence[0] > 1e-3


def test_impossible_cuts_are_refused():
    model = _llama(1)
    (attn,) = attention_layers(model)
    with pytest.raises(ConfigError):
        prune_kv_groups(attn, keep=[])
    with pytest.raises(ConfigError):
        prune_query_heads(attn, 5, torch.ones(8))
    with pytest.raises(ConfigError):
        drop_layers(model, [0])


def test_mlp_channels_go_through_torch_pruning_and_keep_the_kept_channels_exact():
    from energyprune.pruning.decoder import prune_mlp_channels

    model = _llama(1)
    mlp = model.model.layers[0].mlp
    keep = torch.tensor([90, 3, 17, 40, 41])  # any order: the kept channels keep theirs
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        h = torch.nn.functional.silu(x @ mlp.gate_proj.weight[keep.sort().values].T)
        want = (h * (x @ mlp.up_proj.weight[keep.sort().values].T)) @ mlp.down_proj.weight[
            :, keep.sort().values
        ].T
        assert prune_mlp_channels(mlp, keep) == "torch-pruning"
        assert torch.allclose(mlp(x), want, atol=1e-6)
    assert mlp.down_proj.in_features == mlp.gate_proj.out_features == 5


def test_an_mlp_the_graph_cannot_cut_falls_back_to_our_own_cut(monkeypatch):
    from energyprune.pruning import decoder

    mlp = _llama(1).model.layers[0].mlp
    monkeypatch.setattr(decoder, "_graph_cut", lambda m, removed: False)
    assert decoder.prune_mlp_channels(mlp, torch.arange(8)) == "own"
    assert mlp.up_proj.out_features == mlp.down_proj.in_features == 8
