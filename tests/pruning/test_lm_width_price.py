"""A width cut is credited with what re-pricing the cut model saves, not with a share of its
module's whole energy (which includes launches and static power that a narrower matrix keeps)."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from energyprune.energy.lm.per_token import profile_lm
from energyprune.energy.lm.regimes import Decode
from energyprune.pruning.decoder import group_importance
from energyprune.pruning.lm_allocate import LMPlan, LMScores, apply_plan, mlp_scores, unit_cuts
from tests.tiny_lms import tiny_llama

IDS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["mlp", "heads"])
@pytest.mark.parametrize("hardware", ["h100-sxm", "horowitz-45nm"])
def test_a_width_cut_is_credited_what_re_pricing_saves(kind, hardware):
    model = tiny_llama(3)
    regime = Decode(1, 64)
    scores = LMScores([0.1] * 3, mlp_scores(model, [IDS]), group_importance(model, [IDS]))
    dense = profile_lm(model, regime, hardware)
    cuts = unit_cuts(model, dense, scores, round_to=16, kinds=(kind,))
    credited = next(c.joules for c in cuts if c.layer == 1)
    cut = copy.deepcopy(model)
    plan = LMPlan(mlp_cut={1: 1}) if kind == "mlp" else LMPlan(heads_cut={1: 1})
    apply_plan(cut, plan, scores, round_to=16)
    saved = dense.energy_j - profile_lm(cut, regime, hardware).energy_j
    assert saved > 0
    assert credited == pytest.approx(saved, rel=0.01)
