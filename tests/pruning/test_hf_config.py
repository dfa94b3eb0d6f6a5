"""A pruned Hugging Face model's config describes its modules, and reloads where widths allow."""

from __future__ import annotations

import pytest
import torch

from energyprune.pruning.apply import prune
from energyprune.pruning.export import load, save

PER_LAYER = "per_layer_widths"  # spelled out: the test must fail on code without it

transformers = pytest.importorskip("transformers")


def _in_config(config, field: str) -> list[int] | int:
    """What the config says a field is: per layer where they differ, else the one value."""
    return (getattr(config, PER_LAYER, None) or {}).get(field, getattr(config, field))


def _expect(config, field: str, per_layer: list[int]) -> None:
    want = per_layer if len(set(per_layer)) > 1 else per_layer[0]
    assert _in_config(config, field) == want, field
    assert getattr(config, field) == max(per_layer), field  # an upper bound when they differ


def _bert_widths(model) -> tuple[list[int], list[int]]:
    layers = model.encoder.layer
    heads = [x.attention.self.query.out_features // 16 for x in layers]
    assert [x.attention.self.num_attention_heads for x in layers] == heads
    return heads, [x.intermediate.dense.out_features for x in layers]


def _llama(layers: int):
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval(), {"input_ids": torch.randint(0, 64, (1, 16))}


def test_bert_config_names_the_heads_and_widths_left(tiny_bert, tmp_path):
    model, ids = tiny_bert()
    result = prune(model, ids, 0.4)
    heads, hidden = _bert_widths(result.model)
    assert min(heads) < 4 and max(hidden) < 256  # heads and MLP units were cut
    config = result.model.config
    _expect(config, "num_attention_heads", heads)
    _expect(config, "intermediate_size", hidden)
    assert config.head_dim == 16  # no longer hidden_size // num_attention_heads
    assert model.config.num_attention_heads == 4  # the dense model is untouched
    result.model.save_pretrained(tmp_path / "hf")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # refused, never reinit
        transformers.BertModel.from_pretrained(tmp_path / "hf")
    save(result, tmp_path / "ours")  # our own format rebuilds it, config included
    again, _ = load(tmp_path / "ours", model=model)
    assert _bert_widths(again) == (heads, hidden)
    assert _in_config(again.config, "num_attention_heads") == _in_config(
        config, "num_attention_heads"
    )


def test_bert_with_only_its_mlp_cut_round_trips_through_from_pretrained(tiny_bert, tmp_path):
    model, ids = tiny_bert(layers=1)
    result = prune(model, ids, 0.6, ignored_layers=("re:.*attention.*",))
    assert result.model.config.intermediate_size < 256
    assert result.model.config.num_attention_heads == 4
    result.model.save_pretrained(tmp_path)
    loaded = transformers.BertModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        want = result.model(**ids).last_hidden_state
        assert torch.allclose(loaded(**ids).last_hidden_state, want, atol=1e-5)


def test_llama_config_matches_its_modules_per_layer():
    model, ids = _llama(layers=3)
    result = prune(model, ids, 0.6)
    hidden = [x.mlp.up_proj.out_features for x in result.model.model.layers]
    assert max(hidden) < 128
    _expect(result.model.config, "intermediate_size", hidden)
    assert [x.mlp.intermediate_size for x in result.model.model.layers] == hidden
    assert result.model.config.num_attention_heads == 4  # heads not cut: nothing changed
    assert result.model.config.num_key_value_heads == 2


def test_llama_round_trips_through_from_pretrained(tmp_path):
    model, ids = _llama(layers=1)
    result = prune(model, ids, 0.6)
    assert (
        result.model.config.intermediate_size
        == result.model.model.layers[0].mlp.up_proj.out_features
        < 128
    )
    result.model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**ids).logits, result.model(**ids).logits, atol=1e-5)
