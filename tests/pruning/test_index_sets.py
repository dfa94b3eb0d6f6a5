"""A model whose groups grow without bound (Swin's window attention) is refused fast: the
whole-model listing stops at the first set longer than any tensor dimension, and its blocks
are known from a dry run on meta tensors before the per-part pass traces anything real."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from energyprune.errors import ConfigError
from energyprune.pruning import groups, tracing
from energyprune.pruning.apply import prune

SIDE, DIM, HEADS = 4, 16, 2
TOKENS = SIDE * SIDE


class _Attention(nn.Module):
    """Swin's attention as torchvision writes it: the projections called as ``F.linear`` on
    their weights, and (``per_head``) a learned bias per head added to the scores."""

    def __init__(self, per_head: bool) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.bias = nn.Parameter(torch.zeros(TOKENS * TOKENS, HEADS)) if per_head else None

    def forward(self, x):  # (batch, height, width, channels), as Swin keeps it: one window
        b, h, w, c = x.shape
        x, n = x.reshape(b, h * w, c), h * w
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias).reshape(b, n, 3, HEADS, c // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = q @ k.transpose(-2, -1)
        if self.bias is not None:
            attn = attn + self.bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return F.linear(x, self.proj.weight, self.proj.bias).reshape(b, h, w, c)


class _Block(nn.Module):
    def __init__(self, per_head: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn = _Attention(per_head)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Tokens(nn.Module):
    """Two transformer blocks over a 4 x 4 map of tokens, channels last, and a classifier."""

    def __init__(self, per_head: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(8, DIM)
        self.blocks = nn.Sequential(_Block(per_head), _Block(per_head))
        self.head = nn.Linear(DIM, 10)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)).mean((1, 2)))


def _x() -> torch.Tensor:
    return torch.randn(1, SIDE, SIDE, 8)


@pytest.fixture
def real_traces(monkeypatch) -> list[nn.Module]:
    """Every module Torch-Pruning traces on real tensors (a dry run's are on meta)."""
    seen: list[nn.Module] = []
    build = tracing.build_graph

    def spy(module, *args, **kwargs):
        if not any(p.is_meta for p in module.parameters()):
            seen.append(module)
        return build(module, *args, **kwargs)

    monkeypatch.setattr(tracing, "build_graph", spy)
    monkeypatch.setattr(groups, "build_graph", spy)
    return seen


def test_unbounded_blocks_are_known_before_the_per_part_pass(real_traces):
    model = _Tokens().eval()
    structure = groups.Structure(model, _x(), seconds=30)
    assert structure.whole_model_error.startswith("UnboundedGroup: index sets outgrew")
    assert real_traces[0] is model  # the one real trace of a block: inside the whole model's
    assert not any(m is model.blocks or isinstance(m, _Block) for m in real_traces)
    assert structure.parts == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert {g.root for g in structure.groups} >= {"blocks.0.mlp.0", "blocks.1.mlp.0"}


def test_the_refusal_names_the_unbounded_sets_and_the_fix():
    with pytest.raises(ConfigError) as refused:
        prune(_Tokens().eval(), _x(), 0.2)
    message = str(refused.value)
    assert "\n" not in message
    assert "does not trace whole for channel pruning (UnboundedGroup: index sets outgrew" in message
    assert "raise the target above that" in message


def test_without_the_per_head_bias_the_same_blocks_trace_whole_with_no_dry_run(monkeypatch):
    dry_runs = []

    def spy(*args, **kwargs):
        dry_runs.append(args)
        return set()

    monkeypatch.setattr(tracing, "unbounded_parts", spy, raising=False)  # absent before 38
    result = prune(_Tokens(per_head=False).eval(), _x(), 0.5)
    assert result.plan.traced_parts is None and result.plan.rounds and not dry_runs
    assert result.energy_ratio <= 0.505
