"""FBNet blocks built as HW-NAS-Bench measured them: names parse into the README's structure
(expansion, shuffle, depthwise stride and padding, grouped projection, residual), every block
of the TX2 table builds and keeps its output width, and a bad name is one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.fbnet import ChannelShuffle, ConvBlock, parse_block
from energyprune.models.zoo import build_model

TABLE = Path(__file__).resolve().parents[3] / "shared/measurements/jetson-tx2-fbnet-blocks.csv"


def test_a_grouped_block_has_the_readme_structure():
    built = build_model("fbnet:ConvBlock_H56_W56_Cin24_Cout24_exp6_kernel5_stride1_group2")
    block = built.model
    assert isinstance(block, ConvBlock) and built.input_shape == (1, 24, 56, 56)
    expand, depthwise, project = block.expand[0], block.depthwise[0], block.project[0]
    assert (expand.in_channels, expand.out_channels, expand.groups) == (24, 144, 2)
    assert expand.bias is None and isinstance(block.shuffle, ChannelShuffle)
    assert (depthwise.groups, depthwise.kernel_size, depthwise.padding) == (144, (5, 5), (2, 2))
    assert (project.out_channels, project.groups) == (24, 2) and block.residual
    assert not isinstance(block.project[-1], nn.ReLU)  # BN only after the projection


def test_stride_two_drops_the_residual_and_halves_the_map():
    built = build_model("fbnet:ConvBlock_H28_W28_Cin32_Cout64_exp3_kernel3_stride2_group1")
    assert not built.model.residual and isinstance(built.model.shuffle, nn.Identity)
    with torch.no_grad():
        assert built.model(torch.randn(*built.input_shape)).shape == (1, 64, 14, 14)


def test_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_skip_is_the_identity_only_when_the_shape_is_kept():
    assert isinstance(build_model("fbnet:Skip_H8_W8_Cin64_Cout64_stride1").model.body, nn.Identity)
    skip = build_model("fbnet:Skip_H8_W8_Cin64_Cout112_stride1").model.body
    assert skip[0].out_channels == 112 and skip[0].kernel_size == (1, 1)


@pytest.mark.skipif(not TABLE.is_file(), reason="needs ../shared/measurements")
def test_every_measured_block_builds_with_its_output_width():
    with TABLE.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        built = build_model(f"fbnet:{row['block']}")
        with torch.no_grad():
            out = built.model(torch.randn(*built.input_shape))
        assert out.shape[1] == int(row["cout"]), row["block"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fbnet:Blob_H1", "unknown FBNet block type"),
        ("fbnet:ConvBlock_H8_W8_Cin8", "lacks Cout"),
        ("fbnet:FC_Cin8_Coutx", "cannot read field"),
    ],
)
def test_a_bad_block_name_is_one_line(name, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_block(name)
    assert "\n" not in str(info.value)
