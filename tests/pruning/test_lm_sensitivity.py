"""Measured importance: each probe masks exactly the cut it prices (the weakest half of MLP
channels, the weakest query head per group, the whole layer), leaves the model as it was, and
the energy criterion takes the cut whose loss per joule is least."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from energyprune.energy.lm.per_token import profile_lm
from energyprune.energy.lm.regimes import Decode
from energyprune.pruning.decoder import group_importance
from energyprune.pruning.lm_allocate import LMScores, allocate, mlp_scores, unit_cuts
from energyprune.pruning.lm_sensitivity import Sensitivity, greedy_layers, loss_sensitivity
from tests.tiny_lms import tiny_llama

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def _scores(model) -> LMScores:
    return LMScores([0.1] * 3, mlp_scores(model, [IDS]), group_importance(model, [IDS]))


@torch.no_grad()
def _loss(model) -> float:
    logits = model(input_ids=IDS).logits[:, :-1]
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, 64), IDS[:, 1:].reshape(-1)))


def test_each_probe_masks_only_its_own_cut():
    model = tiny_llama(3)
    with torch.no_grad():  # layer 1: its weakest MLP half and weakest head per group are dead
        mlp = model.model.layers[1].mlp
        mlp.down_proj.weight[:, :64] = 0
        o = model.model.layers[1].self_attn.o_proj
        o.weight[:, [h * 8 + c for h in (0, 4) for c in range(8)]] = 0  # head 0 of each group
    scores = _scores(model)
    before = model(input_ids=IDS).logits.detach()
    found = loss_sensitivity(model, scores, _loss)
    assert found.mlp[1] == pytest.approx(0.0, abs=1e-6)
    assert found.heads[1] == pytest.approx(0.0, abs=1e-6)
    assert abs(found.mlp[0]) > 1e-5 and abs(found.heads[0]) > 1e-5 and abs(found.layer[1]) > 1e-5
    assert found.base == pytest.approx(_loss(model))
    assert torch.equal(model(input_ids=IDS).logits, before)  # every hook was removed


def test_measured_loss_decides_between_kinds():
    model = tiny_llama(3)
    lm = profile_lm(model, Decode(1, 64), "h100-sxm")
    base = _scores(model)
    mlp_j = [c.joules for c in unit_cuts(model, lm, base, round_to=16, kinds=("mlp",))]
    saving = 0.5 * sum(mlp_j)  # half of what every MLP chunk saves (re-priced)

    def plan(layer: float, mlp: float, heads: float):
        measured = Sensitivity(3.0, [layer, 5 * layer, 5 * layer], [mlp] * 3, [heads] * 3)
        scored = LMScores(base.influence, base.mlp, base.heads, measured)
        return allocate(unit_cuts(model, lm, scored, round_to=16), saving)

    cheap_layer = plan(layer=1e-4, mlp=1.0, heads=1.0)
    assert cheap_layer.drop == [0] and not cheap_layer.mlp_cut
    cheap_width = plan(layer=10.0, mlp=1e-4, heads=1.0)
    assert not cheap_width.drop and cheap_width.mlp_cut and not cheap_width.heads_cut


def test_greedy_layers_skips_the_layers_that_do_nothing_and_leaves_the_model_alone():
    model = tiny_llama(4)
    with torch.no_grad():
        for i in (1, 3):  # identity layers: skipping them changes nothing
            layer = model.model.layers[i]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    before = model(input_ids=IDS).logits.detach()
    seen = []
    chosen = greedy_layers(model, _loss, 2, [0, 1, 2, 3], lambda d, n: seen.append((d, n)))
    assert sorted(chosen) == [1, 3]
    assert seen[-1] == (7, 7)  # 4 probes, then 3
    assert torch.equal(model(input_ids=IDS).logits, before)
