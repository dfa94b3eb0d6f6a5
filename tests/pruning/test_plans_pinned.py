"""One-shot plans of five torchvision models at half their estimated energy are the plans
main made before the one-loop refactor (issue 34, pinned from 5efc255): which channels each
round removed, the final widths and masks, as a digest. A change that moves a plan fails
here and must say why."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from energyprune.pruning.apply import prune  # noqa: E402

#: model → sha256 (first 16 hex digits) of the plan's rounds, widths and masks at 5efc255
PINNED = {
    "resnet50": "7a944c89f526e951",
    "mobilenet_v2": "4a5432b363754ecf",
    "vgg16_bn": "1810cd3707badc16",
    "regnet_x_400mf": "9c4c49c5853f7eab",
    "vit_b_16": "09d8ad14d7411d63",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_one_shot_plans_are_those_main_made_before(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    plan = prune(model, torch.randn(1, 3, 224, 224), 0.5).plan.to_dict()
    cut = json.dumps({k: plan[k] for k in ("rounds", "widths", "masks")}, sort_keys=True)
    assert hashlib.sha256(cut.encode()).hexdigest()[:16] == PINNED[name]
