"""Reference figures on real architectures: torchvision and Hugging Face (no downloads)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from energyprune.energy.pricing.estimates import profile
from energyprune.energy.tracing.tracer import trace


def test_resnet50_macs_and_layers():
    with torch.no_grad():
        prof = profile(torchvision.models.resnet50(), torch.randn(1, 3, 224, 224))
    assert abs(prof.total.macs / 4_089_184_256 - 1) < 0.005
    assert len(prof.layers) >= 50


@pytest.mark.parametrize("no_grad", [True, False])
def test_vit_b_16_counts_fused_attention(no_grad):
    model = torchvision.models.vit_b_16()
    with torch.set_grad_enabled(not no_grad):
        tr = trace(model, torch.randn(1, 3, 224, 224))
    fused = any(r.op.startswith("aten._native_multi_head_attention") for r in tr.records)
    assert fused == no_grad  # the fast path runs only in no-grad eval
    assert abs(sum(r.macs for r in tr.records) / 17.56e9 - 1) < 0.01
    assert not tr.uncosted_ops


def test_mobilenet_v2_depthwise():
    with torch.no_grad():
        prof = profile(torchvision.models.mobilenet_v2(), torch.randn(1, 3, 224, 224))
    assert abs(prof.total.macs / 300_774_272 - 1) < 1e-9  # equals torch's flop counter / 2


def test_huggingface_bert_from_config(tiny_bert):
    model, ids = tiny_bert(hidden=64, layers=2, heads=4, intermediate=128, tokens=16, pooler=True)
    b, length, h, inter = 2, 16, 64, 128
    per_layer = 4 * b * length * h * h + 2 * b * length * length * h + 2 * b * length * h * inter
    expected = 2 * per_layer + b * h * h  # encoder layers + pooler
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            tr = trace(model, ids)
        assert sum(r.macs for r in tr.records) == expected
        assert not tr.uncosted_ops
    modules = {r.module for r in tr.records if r.macs}
    assert "encoder.layer.0.attention.self.query" in modules
