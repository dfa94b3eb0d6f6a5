"""Ops a decoder adds: causal fused attention, in-place cache updates, copies of broadcast
views, fused attention on the meta device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from energyprune.energy.tracing.tracer import trace


class _Attend(nn.Module):
    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


def _attention_macs(causal: bool, device: str = "cpu") -> int:
    b, h, s, e = 2, 4, 9, 8
    q, k, v = (torch.randn(b, h, s, e, device=device) for _ in range(3))
    with torch.no_grad():
        records = trace(_Attend(causal), (q, k, v)).records
    return sum(r.macs for r in records if r.kind == "attention")


def test_causal_attention_counts_only_the_visible_pairs():
    b, h, s, e = 2, 4, 9, 8
    assert _attention_macs(False) == b * h * s * s * 2 * e
    assert _attention_macs(True) == b * h * s * (s + 1) // 2 * 2 * e


def test_meta_attention_is_one_fused_op_priced_like_the_real_kernel():
    class MetaAttend(_Attend):
        def __init__(self) -> None:
            super().__init__(True)
            self.w = nn.Parameter(torch.empty(1, device="meta"))  # the model is on meta

    q, k, v = (torch.empty(2, 4, 9, 8, device="meta") for _ in range(3))
    records = trace(MetaAttend(), (q, k, v)).records
    attention = [r for r in records if r.kind == "attention"]
    assert len(attention) == 1 and attention[0].macs == _attention_macs(True)
    assert not [r for r in records if r.kind == "matmul"]  # not the math path's bmm
    reads = sum(o.numel for o in attention[0].operands if o.role == "input")
    assert reads == 3 * q.numel()


def test_an_in_place_cache_update_writes_only_the_new_token():
    class Update(nn.Module):
        def forward(self, cache, new, pos):
            return cache.index_copy_(2, pos, new)

    cache, new = torch.zeros(1, 2, 50, 8), torch.randn(1, 2, 1, 8)
    rec = trace(Update(), (cache, new, torch.tensor([7])), kv_cache={"k": cache}).records[0]
    written = [o for o in rec.operands if o.role == "kv"]
    assert [o.numel for o in written] == [new.numel()]


def test_a_copy_of_a_broadcast_view_reads_each_element_once():
    class RepeatKV(nn.Module):
        def forward(self, kv):
            return kv[:, :, None].expand(1, 2, 4, 30, 8).reshape(1, 8, 30, 8)

    kv = torch.randn(1, 2, 30, 8)
    records = trace(RepeatKV(), kv, kv_cache={"k": kv}).records
    copy = next(r for r in records if r.kind == "data")
    assert sum(o.numel for o in copy.operands if o.role == "kv") == kv.numel()
    assert sum(o.numel for o in copy.operands if o.role == "output") == 4 * kv.numel()
