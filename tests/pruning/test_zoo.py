"""Zoo models that once failed: grouped convolutions, channel shuffle, shifted windows."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.pruning.test_channel import assert_equivalent


@pytest.mark.parametrize("name", ["resnext50_32x4d", "regnet_x_400mf", "regnet_y_400mf"])
def test_grouped_convolutions_keep_every_group_the_same_width(name):
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    dense_groups = {n: m.groups for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    result = assert_equivalent(model, torch.randn(1, 3, 64, 64))
    for n, m in result.model.named_modules():
        if isinstance(m, nn.Conv2d) and dense_groups[n] > 1 and m.groups != m.out_channels:
            assert m.groups == dense_groups[n]  # groups kept, each group thinner
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
            assert m.in_channels // m.groups >= 2  # never turned depthwise


def test_round_to_and_groups_together():
    model = torchvision.models.regnet_x_400mf(num_classes=10).eval()
    result = assert_equivalent(model, torch.randn(1, 3, 64, 64), round_to=8)
    for m in result.model.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups != m.out_channels:
            assert m.out_channels % m.groups == 0
    touched = {e["root"] for entries in result.plan.rounds for e in entries}
    widths = {n: m.out_channels for n, m in result.model.named_modules() if n in touched}
    assert all(w % 8 == 0 for w in widths.values()), widths
