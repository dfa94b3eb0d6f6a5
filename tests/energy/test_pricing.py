"""Pricing against hand counts of MACs and bytes: views are free, a tensor read twice by one op
is read once, each weight's sparsity scales only its own MACs, activation × activation MACs are
never scaled, depthwise convs are judged by their channels, and dtypes are sized or refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.pricing.estimates import profile
from energyprune.energy.pricing.features import op_features
from energyprune.energy.tracing.tracer import trace
from energyprune.errors import ConfigError

FP32 = 4


@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 9), d=st.integers(2, 24), fake=st.booleans())
def test_a_bias_free_linear_on_3d_input_moves_input_weight_and_output_once(tokens, d, fake):
    """LLaMA-style projection: mm + _unsafe_view; the view moves nothing."""
    layer = nn.Linear(d, d, bias=False)
    prof = profile(layer, torch.randn(1, tokens, d), shapes_only=fake)
    assert prof.total.bytes == FP32 * (tokens * d + d * d + tokens * d)
    assert prof.total.macs == tokens * d * d


def test_an_operand_passed_twice_is_read_once():
    class Gram(nn.Module):
        def forward(self, x):
            return x @ x.T  # mm(x, x.t()): one storage

    t, d = 6, 5
    prof = profile(Gram(), torch.randn(t, d))
    assert prof.total.bytes == FP32 * (t * d + t * t)


def _fused_attention_record(model: nn.Module, x: torch.Tensor, op: str):
    with torch.no_grad():
        records = trace(model.eval(), x).records
    return next(r for r in records if op in r.op)


class _SelfAttention(nn.Module):
    def __init__(self, embed: int) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(embed, 4, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def test_self_attention_reads_its_input_once():
    batch, length, embed = 2, 5, 16
    rec = _fused_attention_record(_SelfAttention(embed), torch.randn(batch, length, embed), "multi")
    inputs = sum(o.numel for o in rec.operands if o.role == "input")
    assert inputs == batch * length * embed


def test_fused_attention_scales_only_the_sparse_weights_macs():
    b, n, e = 2, 5, 16
    model = _SelfAttention(e)
    _half_zero(model.mha.out_proj.weight)
    rec = _fused_attention_record(model, torch.randn(b, n, e), "multi")
    in_proj, out_proj, attention = 3 * b * n * e * e, b * n * e * e, 2 * b * n * n * e
    assert rec.macs == in_proj + out_proj + attention
    assert rec.mac_density == pytest.approx(1 - 0.5 * out_proj / rec.macs)


class _FusedEncoder(nn.Module):
    """``nn.TransformerEncoderLayer``'s fused inference kernel, called directly (the layer
    only takes its fast path outside a dispatch mode)."""

    def __init__(self, embed: int, hidden: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(embed, 4, hidden, dropout=0.0, batch_first=True)

    def forward(self, x):
        m = self.layer
        a = m.self_attn
        return torch._transformer_encoder_layer_fwd(
            x, a.embed_dim, a.num_heads, a.in_proj_weight, a.in_proj_bias, a.out_proj.weight,
            a.out_proj.bias, False, False, m.norm1.eps, m.norm1.weight, m.norm1.bias,
            m.norm2.weight, m.norm2.bias, m.linear1.weight, m.linear1.bias, m.linear2.weight,
            m.linear2.bias, None, None,
        )  # fmt: skip


def _encoder(embed: int, hidden: int) -> _FusedEncoder:
    return _FusedEncoder(embed, hidden)


def _half_zero(w: torch.Tensor) -> None:
    with torch.no_grad():
        w.view(-1)[: w.numel() // 2] = 0


@pytest.mark.parametrize("sparse", [("linear1",), ("linear1", "linear2", "in_proj", "out_proj")])
def test_each_weight_density_scales_only_its_own_macs(sparse):
    b, n, e, h = 2, 6, 16, 32
    fused = _encoder(e, h)
    layer = fused.layer
    weights = {
        "in_proj": layer.self_attn.in_proj_weight,
        "out_proj": layer.self_attn.out_proj.weight,
        "linear1": layer.linear1.weight,
        "linear2": layer.linear2.weight,
    }
    for name in sparse:
        _half_zero(weights[name])
    rec = _fused_attention_record(fused, torch.randn(b, n, e), "encoder_layer")
    shares = {  # MACs against each weight, by hand
        "in_proj": 3 * b * n * e * e,
        "out_proj": b * n * e * e,
        "linear1": b * n * e * h,
        "linear2": b * n * h * e,
    }
    attention = 2 * b * n * n * e  # Q Kᵀ and the weighted sum of V: no weight involved
    assert rec.macs == sum(shares.values()) + attention
    kept = rec.macs - sum(0.5 * shares[name] for name in sparse)
    assert rec.mac_density == pytest.approx(kept / rec.macs)
    assert rec.mac_density > 0.5  # never the product of the densities (0.0625 for four)


def test_activation_macs_are_never_scaled():
    b, n, e, h = 1, 4, 8, 16
    fused = _encoder(e, h)
    layer = fused.layer
    with torch.no_grad():
        for w in (layer.self_attn.in_proj_weight, layer.self_attn.out_proj.weight):
            w.zero_()
        layer.linear1.weight.zero_()
        layer.linear2.weight.zero_()
    rec = _fused_attention_record(fused, torch.randn(b, n, e), "encoder_layer")
    assert rec.mac_density == pytest.approx(2 * b * n * n * e / rec.macs)


@pytest.mark.parametrize(("channels", "unaligned"), [(32, False), (30, True)])
def test_depthwise_alignment_is_judged_by_channel_count(channels, unaligned):
    hw = load_hardware("gpu-generic")
    assert hw.channel_multiple == 8
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    rec = next(r for r in trace(conv, torch.randn(1, channels, 8, 8)).records if r.macs)
    feats = op_features(rec, hw, None)
    assert (feats.amounts["mac:unaligned"] > 0) is unaligned


def test_grouped_conv_alignment_still_counts_its_reduction_width():
    hw = replace(load_hardware("gpu-generic"), channel_multiple=8)
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=8, bias=False)  # 4 inputs per group
    rec = next(r for r in trace(conv, torch.randn(1, 32, 8, 8)).records if r.macs)
    assert op_features(rec, hw, None).amounts["mac:unaligned"] > 0


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_is_priced_at_one_byte(dtype):
    class Cast(nn.Module):
        def forward(self, x):
            return x.to(dtype)

    n = 40
    prof = profile(Cast(), torch.randn(n))
    assert prof.total.bytes == FP32 * n + 1 * n


def test_a_dtype_we_cannot_size_is_refused():
    class Double(nn.Module):
        def forward(self, x):
            return x * 2

    with pytest.raises(ConfigError, match="cannot price tensors of dtype complex64"):
        profile(Double(), torch.randn(4, dtype=torch.complex64))
