"""Tracer: MACs match torch.utils.flop_counter, attribution, fused ops, uncosted ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from energyprune.energy.tracing.registry import register_formula
from energyprune.energy.tracing.tracer import trace
from energyprune.errors import ConfigError, UnsupportedOpError


def macs(model: nn.Module, x) -> int:
    return sum(r.macs for r in trace(model, x).records)


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@settings(max_examples=25, deadline=None)
@given(
    dims=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2, 4]),
    per_group_in=st.integers(1, 3),
    per_group_out=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    size=st.integers(4, 7),
    batch=st.integers(1, 2),
    transposed=st.booleans(),
)
def test_conv_macs_equal_flop_counter(
    dims, groups, per_group_in, per_group_out, kernel, stride, size, batch, transposed
):
    conv_cls = {
        (1, False): nn.Conv1d,
        (2, False): nn.Conv2d,
        (3, False): nn.Conv3d,
        (1, True): nn.ConvTranspose1d,
        (2, True): nn.ConvTranspose2d,
        (3, True): nn.ConvTranspose3d,
    }[(dims, transposed)]
    conv = conv_cls(groups * per_group_in, groups * per_group_out, kernel, stride, groups=groups)
    x = torch.randn(batch, groups * per_group_in, *([size] * dims))
    assert macs(conv, x) == flop_counter_macs(conv, x) > 0


def test_depthwise_conv_macs():
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    assert macs(conv, torch.randn(2, 32, 14, 14)) == 2 * 14 * 14 * 32 * 9


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 3), rows=st.integers(1, 6), k=st.integers(1, 8), n=st.integers(1, 8))
def test_matmul_family_equals_flop_counter(batch, rows, k, n):
    class MatMuls(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(k, n)
            self.w = nn.Parameter(torch.randn(batch, k, n))

        def forward(self, x):
            y = self.fc(x)  # addmm / mm over a 3-D input
            z = torch.bmm(x, self.w) + torch.baddbmm(y, x, self.w)
            return z + torch.matmul(x, self.w)

    model, x = MatMuls(), torch.randn(batch, rows, k)
    assert macs(model, x) == flop_counter_macs(model, x) == 4 * batch * rows * k * n


@pytest.mark.parametrize("value_dim", [8, 6])  # 8: fused CPU kernel; 6: math path (bmm)
def test_sdpa_macs(value_dim):
    q = torch.randn(2, 4, 10, 8)
    k = torch.randn(2, 4, 12, 8)
    v = torch.randn(2, 4, 12, value_dim)

    class Attention(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    records = trace(Attention(), (q, k, v)).records
    assert sum(r.macs for r in records) == 2 * 4 * 10 * 12 * (8 + value_dim)
    if value_dim == 8:
        assert any(r.kind == "attention" for r in records)  # the fused kernel has a formula


def test_module_attribution_with_functional_calls_and_branches():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            x = self.inner(x)
            return F.relu(x) if x.sum() > -1e9 else x  # data-dependent branch

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.tanh(self.block(x)))

    tr = trace(Net(), torch.randn(3, 4))
    by_module = {(r.module, r.op) for r in tr.records}
    assert ("block.inner", "aten.addmm.default") in by_module
    assert ("block", "aten.relu.default") in by_module
    assert ("", "aten.tanh.default") in by_module
    assert ("head", "aten.addmm.default") in by_module
    assert tr.modules["block.inner"].params == 20 and tr.params == 30


def test_parameters_are_recognised_even_through_views():
    fc = nn.Linear(8, 4, bias=False)
    addmm = [r for r in trace(fc, torch.randn(2, 8)).records if r.macs]
    roles = {o.role for o in addmm[0].operands}
    assert {"param", "input", "output"} == roles
    assert next(o for o in addmm[0].operands if o.role == "param").name == "weight"


def test_zero_mac_ops_record_their_traffic():
    class Data(nn.Module):
        def forward(self, x):
            y = torch.cat([x, -x], dim=1)  # copies: bytes move (x twice would be read once)
            return y.view(-1).permute(0).contiguous().clone()

    records = trace(Data(), torch.randn(2, 3)).records
    cat = next(r for r in records if r.op == "aten.cat.default")
    assert cat.macs == 0 and sum(o.numel for o in cat.operands) == 6 + 6 + 12
    views = [r for r in records if r.kind == "view"]
    assert views and all(not r.operands for r in views)  # aliases move no bytes
    clone = next(r for r in records if r.op == "aten.clone.default")
    assert clone.kind == "data" and clone.ops == 0


def test_embedding_reads_only_gathered_rows():
    emb = nn.Embedding(1000, 16)
    rec = next(r for r in trace(emb, torch.tensor([[1, 2, 3]])).records)
    weight = next(o for o in rec.operands if o.role == "param")
    assert weight.numel == 3 * 16


def test_op_without_formula_is_reported_not_free():
    class Sorts(nn.Module):
        def forward(self, x):
            return torch.sort(x).values

    tr = trace(Sorts(), torch.randn(10))
    assert tr.uncosted_ops == {"aten.sort.default": 1}
    assert any(r.kind == "uncosted" for r in tr.records)


def test_eval_mode_is_used_and_restored():
    """Inference batch norm (running statistics, left unchanged, 2 ops per element) is what
    gets traced; a train-mode trace would compute batch statistics (4 ops per element) and
    update the running ones."""
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    stats = model[1].running_mean.clone(), int(model[1].num_batches_tracked)
    x = torch.randn(3, 4)
    records = trace(model, x).records
    assert model.training and all(m.training for m in model.modules())  # restored
    norms = [r for r in records if r.kind == "norm"]
    assert len(norms) == 1 and norms[0].ops == 2 * x.numel()
    assert torch.equal(model[1].running_mean, stats[0])
    assert int(model[1].num_batches_tracked) == stats[1]


def test_keyword_inputs_and_bad_inputs():
    class KW(nn.Module):
        def forward(self, *, x):
            return x * 2

    assert trace(KW(), {"x": torch.randn(3)}).records
    with pytest.raises(ConfigError, match="example_inputs"):
        trace(KW(), 3)


def test_registry_rejects_duplicates_and_non_packets():
    with pytest.raises(UnsupportedOpError, match="duplicate"):
        register_formula(torch.ops.aten.mm)(lambda a, k, o: None)
    with pytest.raises(UnsupportedOpError, match="op packets"):
        register_formula(torch.ops.aten.mm.default)(lambda a, k, o: None)


@pytest.mark.parametrize(
    ("layer", "shape", "kind", "ops_per_element"),
    [
        (nn.BatchNorm2d(4), (2, 4, 5, 5), "norm", 2),
        (nn.GroupNorm(2, 4), (2, 4, 5, 5), "norm", 5),
        (nn.LayerNorm(5), (2, 4, 5), "norm", 5),
        (nn.ReLU(), (2, 4, 5), "elementwise", 1),
        (nn.MaxPool2d(2), (1, 2, 4, 4), "pool", 4 / 4),  # 2x2 window per output element
        (nn.AvgPool2d(2), (1, 2, 4, 4), "pool", 4 / 4),
    ],
)
def test_norm_pool_and_elementwise_ops_are_costed(layer, shape, kind, ops_per_element):
    x = torch.randn(*shape)
    records = [r for r in trace(layer, x).records if r.kind == kind]
    assert records and sum(r.ops for r in records) == ops_per_element * x.numel()
