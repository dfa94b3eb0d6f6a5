"""Zoo models that once failed: grouped convolutions, channel shuffle, shifted windows."""

from __future__ import annotations

import logging
import time

import pytest
import torch
import torchvision
from torch import nn

import energyprune
from energyprune.errors import ConfigError
from energyprune.models.layers import layer_widths
from energyprune.pruning.apply import prune
from energyprune.pruning.plan import replay
from energyprune.pruning.tracing import TraceTimeout, deadline
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


def _x():
    return torch.randn(1, 3, 64, 64)


def test_shufflenet_prunes_inside_and_between_its_blocks_to_half_and_replays():
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    result = assert_equivalent(model, _x(), 0.5)
    assert result.energy_ratio <= 0.505
    assert result.plan.traced_parts and all(p.startswith("stage") for p in result.plan.traced_parts)
    touched = {e["root"] for entries in result.plan.rounds for e in entries}
    assert "conv5.0" in touched  # between blocks: the last 1x1 conv feeding the classifier
    assert any(r.startswith("stage") for r in touched)  # inside blocks
    fresh = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    replay(fresh, result.plan)  # raises if a width differs
    assert layer_widths(fresh) == layer_widths(result.model)


class _Shuffled(nn.Module):
    """Channel shuffle in the model's own forward: no part to trace, nothing between blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.b = nn.Conv2d(64, 256, 3, padding=1)  # weights outweigh activations at 8x8
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        x = self.a(x)
        x1, x2 = x.chunk(2, dim=1)  # as in ShuffleNet V2: the tracer divides by zero
        x = torch.cat((x1, x2 * 2), dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(self.b(x).mean((2, 3)))


def test_a_target_beyond_the_parts_reach_is_refused_with_the_figures():
    with pytest.raises(ConfigError, match=r"does not trace whole .* reach about \d+\.\d% of dense"):
        prune(_Shuffled().eval(), torch.randn(1, 3, 8, 8), 0.5)


def test_on_a_zero_skipping_profile_it_falls_back_to_unstructured_and_says_so(caplog):
    model, x = _Shuffled().eval(), torch.randn(1, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="energyprune"):
        result = prune(model, x, 0.5, hardware="eyeriss-65nm")
    assert result.plan.granularity == "unstructured" and result.plan.masks
    assert result.energy_ratio <= 0.5 * 1.01
    assert len(result.plan.notes) == 1 and "pruned unstructured on top" in caplog.text
    assert result.model(x).shape == (1, 10)


def test_swin_t_prunes_mlp_hidden_units_inside_its_blocks():
    model = torchvision.models.swin_t(num_classes=10).eval()
    result = assert_equivalent(model, _x(), 0.7, trace_seconds=2)
    hidden = {n: m.out_features for n, m in result.model.named_modules() if n.endswith("mlp.0")}
    assert hidden and min(hidden.values()) < 384
    dense = dict(model.named_modules())
    for n, m in result.model.named_modules():  # attention is left whole (its part is unsafe)
        if n.endswith("attn.qkv"):
            assert m.out_features == dense[n].out_features


def test_tracing_has_a_time_limit_in_cpu_time():
    """A busy loop is stopped; sleeping (what a loaded machine looks like from inside) uses
    no CPU time, so it is not."""
    start = time.process_time()
    with pytest.raises(TraceTimeout, match=r"longer than 0\.2 s"), deadline(0.2):
        while True:
            sum(range(1000))
    assert time.process_time() - start >= 0.2
    with deadline(0.2):
        time.sleep(0.5)


def test_below_the_structural_floor_the_rest_is_pruned_unstructured_on_top(tmp_path, caplog):
    # ShuffleNet V2 x0.5 at 64x64 reaches ~21 % of dense structurally; 15 % needs sparsity on top
    model, x = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval(), _x()
    with caplog.at_level(logging.WARNING, logger="energyprune"):
        result = prune(model, x, 0.15, hardware="eyeriss-65nm")
    plan = result.plan
    assert plan.rounds and plan.masks and plan.granularity == "unstructured"
    assert result.energy_ratio <= 0.15 * 1.01
    assert "pruned unstructured on top" in caplog.text
    energyprune.save(result, tmp_path / "m")
    fresh = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    loaded, _ = energyprune.load(tmp_path / "m", model=fresh)  # replays rounds, loads zeros
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), result.model.eval()(x))
