"""FBNet's search-space blocks, built as HW-NAS-Bench measured them on a Jetson TX2
(``shared/measurements/README.md``; HW-NAS-Bench ``fbnet_models/model_infer.py``, MIT).

A block is named as in HW-NAS-Bench's lookup table, and ``fbnet:NAME`` is a model spec:
``fbnet:ConvBlock_H112_W112_Cin16_Cout16_exp1_kernel3_stride1_group1`` builds that block, and
its input is ``1 x Cin x H x W``. The fields of a name are parsed by a registry of block types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import nn

from energyprune.errors import ConfigError

__all__ = ["BLOCKS", "PREFIX", "ConvBlock", "FBNetBlock", "build_block", "parse_block"]

PREFIX = "fbnet:"
_FIELD = re.compile(r"^(H|W|Cin|Cout|exp|kernel|stride|group)(\d+)$")


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int, relu: bool) -> nn.Sequential:
    pad = math.ceil((k - stride) / 2)
    layers = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ConvBlock(nn.Module):
    """1x1 expansion (grouped) + BN + ReLU, a channel shuffle when grouped, depthwise kxk at
    ``stride`` + BN + ReLU, 1x1 projection (grouped) + BN, and a residual add when the shape
    is kept."""

    def __init__(self, cin: int, cout: int, exp: int, kernel: int, stride: int, group: int):
        super().__init__()
        mid = cin * exp
        self.expand = _conv_bn(cin, mid, 1, 1, group, relu=True)
        self.shuffle = ChannelShuffle(group) if group > 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, mid, relu=True)
        self.project = _conv_bn(mid, cout, 1, 1, group, relu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.shuffle(self.expand(x))))
        return x + y if self.residual else y


class FBNetBlock(nn.Module):
    """Any other block: a sequence (``Skip``, ``ConvNorm``, ``AvgP``, ``FC``)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _skip(f: dict[str, int]) -> nn.Module:
    if f["stride"] == 1 and f["Cin"] == f["Cout"]:
        return FBNetBlock(nn.Identity())
    return FBNetBlock(_conv_bn(f["Cin"], f["Cout"], 1, f["stride"], 1, relu=True))


def _conv_norm(f: dict[str, int]) -> nn.Module:
    return FBNetBlock(_conv_bn(f["Cin"], f["Cout"], f["kernel"], f["stride"], f["group"], True))


def _fc(f: dict[str, int]) -> nn.Module:
    return FBNetBlock(nn.Sequential(nn.Flatten(), nn.Linear(f["Cin"], f["Cout"])))


#: block type → (factory from the parsed fields, the fields its name must give)
BLOCKS: dict[str, tuple[Callable[[dict[str, int]], nn.Module], tuple[str, ...]]] = {
    "ConvBlock": (
        lambda f: ConvBlock(f["Cin"], f["Cout"], f["exp"], f["kernel"], f["stride"], f["group"]),
        ("H", "W", "Cin", "Cout", "exp", "kernel", "stride", "group"),
    ),
    "Skip": (_skip, ("H", "W", "Cin", "Cout", "stride")),
    "ConvNorm": (_conv_norm, ("H", "W", "Cin", "Cout", "kernel", "stride", "group")),
    "AvgP": (
        lambda f: FBNetBlock(nn.AvgPool2d(f["kernel"], f["stride"])),
        ("H", "W", "Cin", "Cout", "kernel", "stride"),
    ),
    "FC": (_fc, ("Cin", "Cout")),
}


def parse_block(name: str) -> tuple[str, dict[str, int]]:
    """``ConvBlock_H112_..._group1`` → ("ConvBlock", {"H": 112, ...}); one line when it is not."""
    kind, *parts = name.removeprefix(PREFIX).split("_")
    if kind not in BLOCKS:
        raise ConfigError(
            f"unknown FBNet block type {kind!r} in {name!r}: use one of {', '.join(BLOCKS)}"
        )
    fields = {}
    for part in parts:
        match = _FIELD.match(part)
        if match is None:
            raise ConfigError(f"FBNet block {name!r}: cannot read field {part!r}")
        fields[match.group(1)] = int(match.group(2))
    missing = [f for f in BLOCKS[kind][1] if f not in fields]
    if missing:
        raise ConfigError(f"FBNet block {name!r} lacks {', '.join(missing)}")
    fields.setdefault("group", 1)
    return kind, fields


def build_block(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The block ``name`` in eval mode, and its input shape (batch 1, as measured)."""
    kind, fields = parse_block(name)
    model = BLOCKS[kind][0](fields).eval()
    shape = (1, fields["Cin"]) if kind == "FC" else (1, fields["Cin"], fields["H"], fields["W"])
    return model, shape
