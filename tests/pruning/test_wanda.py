"""Wanda unstructured and 2:4 sparsity on a tiny Llama, and what each profile lets them save:
nothing without sparse kernels, the kept half of MACs and values (plus indices) with them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")

from energyprune.energy.hardware.profile import load_hardware  # noqa: E402
from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402
from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.decoder import decoder_layers  # noqa: E402
from energyprune.pruning.wanda import is_nm_sparse, wanda_prune  # noqa: E402
from tests.tiny_lms import tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def _llama():
    return tiny_llama(2)


def _decoder_linears(model):
    return [m for layer in decoder_layers(model) for m in layer.modules()
            if isinstance(m, torch.nn.Linear)]  # fmt: skip


def test_unstructured_zeroes_half_of_every_row_by_activation_weighted_magnitude():
    model = _llama()
    done = wanda_prune(model, [IDS], sparsity=0.5)
    assert len(done) == 14 and all(v == pytest.approx(0.5) for v in done.values())
    for lin in _decoder_linears(model):
        assert ((lin.weight == 0).sum(dim=1) == lin.in_features // 2).all()
    assert (model.lm_head.weight != 0).all()  # the head stays dense
    model(input_ids=IDS)


def test_wanda_keeps_weights_on_loud_inputs_over_larger_ones_on_quiet_inputs():
    model = _llama()
    lin = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.weight[:, 0] = 5.0  # big weights on input 0 ...
    acts = {}
    hook = lin.register_forward_pre_hook(lambda m, a: acts.setdefault("x", a[0]))
    wanda_prune(model, [IDS], sparsity=0.5)
    hook.remove()
    norms = acts["x"].reshape(-1, lin.in_features).norm(dim=0)
    kept = (lin.weight[0] != 0).nonzero().flatten()
    score = torch.ones(lin.in_features) * norms
    score[0] *= 5
    assert set(kept.tolist()) == set(score.topk(lin.in_features // 2).indices.tolist())


def test_2_4_is_free_without_kernels_and_pays_only_what_kernels_skip():
    dense, sparse = _llama(), _llama()
    wanda_prune(sparse, [IDS], nm=(2, 4))
    assert all(is_nm_sparse(lin.weight) for lin in _decoder_linears(sparse))
    regime = Decode(1, 64)
    plain = load_hardware("h100-sxm")
    assert profile_lm(sparse, regime, plain).energy_j == profile_lm(dense, regime, plain).energy_j
    kernels = load_hardware("h100-sxm-2of4")
    d, s = profile_lm(dense, regime, kernels), profile_lm(sparse, regime, kernels)
    assert s.energy_j < d.energy_j
    layer = "model.layers.0.mlp.down_proj"
    row = {x.name: x for x in s.layers}[layer]
    dense_row = {x.name: x for x in d.layers}[layer]
    assert row.flops == dense_row.flops / 2
    assert row.weight_bytes == pytest.approx(dense_row.weight_bytes * 0.5 * (1 + 2 / 32))  # fp32
    head = "lm_head"
    assert {x.name: x for x in s.layers}[head].flops == {x.name: x for x in d.layers}[head].flops


def test_bad_sparsity_and_patterns_are_refused():
    with pytest.raises(ConfigError):
        wanda_prune(_llama(), [IDS], sparsity=1.0)
    with pytest.raises(ConfigError):
        wanda_prune(_llama(), [IDS], nm=(4, 4))
    hw = load_hardware("h100-sxm")
    from energyprune.energy.hardware.profile import _patterns

    assert _patterns(["2:4"], "x") == ("2:4",)
    with pytest.raises(ConfigError, match="sparse_kernels"):
        _patterns(["4:2"], "x")
    assert dataclasses.replace(hw, sparse_kernels=("2:4",)).sparse_kernels == ("2:4",)


def test_layers_are_pruned_in_order_on_the_activations_of_the_pruned_layers_before():
    """By hand: prune layer 0 on the dense activations, then score layer 1 on the activations
    of that pruned model; the result must equal wanda_prune's, and differ from scoring every
    layer on the dense model at once (one shot)."""
    from energyprune.pruning.decoder import input_sq_norms

    def prune(layer, norms_of):
        lins = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        for lin, sq in zip(lins, norms_of(lins), strict=True):
            score = lin.weight.abs() * sq.sqrt()
            drop = score.topk(lin.in_features // 2, dim=1, largest=False).indices
            lin.weight.data.scatter_(1, drop, 0.0)

    by_hand, one_shot, sequential = _llama(), _llama(), _llama()
    wanda_prune(sequential, [IDS], sparsity=0.5)
    with torch.no_grad():
        for layer in decoder_layers(by_hand):  # in order, on the model pruned so far
            prune(layer, lambda lins: input_sq_norms(by_hand, lins, [IDS]))
        dense = _llama()
        for layer, twin in zip(decoder_layers(one_shot), decoder_layers(dense), strict=True):
            twins = [m for m in twin.modules() if isinstance(m, torch.nn.Linear)]
            prune(layer, lambda lins, t=twins: input_sq_norms(dense, t, [IDS]))
    pairs = list(zip(_decoder_linears(by_hand), _decoder_linears(sequential), strict=True))
    assert all(torch.equal(a.weight != 0, b.weight != 0) for a, b in pairs)
    later = zip(_decoder_linears(one_shot)[7:], _decoder_linears(sequential)[7:], strict=True)
    assert any(not torch.equal(a.weight != 0, b.weight != 0) for a, b in later)
