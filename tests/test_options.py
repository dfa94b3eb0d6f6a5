"""Public entry points take keyword settings and build one value at the door: a misspelt
setting is refused with the names that exist, and a spec and keywords combine (issue 34)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import energyprune
from energyprune.errors import ConfigError
from energyprune.options import build
from energyprune.pruning.spec import PruneSpec


@dataclass(frozen=True)
class _Two:
    a: int = 1
    b: str = "x"


def test_build_makes_replaces_and_refuses_unknown_names():
    assert build(_Two, b="y") == _Two(1, "y")
    assert build(_Two, _Two(5, "z"), a=6) == _Two(6, "z")
    with pytest.raises(ConfigError, match=r"unknown setting 'c' for _Two: use one of a, b"):
        build(_Two, c=3)


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip


def test_prune_refuses_a_misspelt_setting():
    with pytest.raises(ConfigError, match="unknown setting 'criterin'"):
        energyprune.prune(_cnn(), torch.randn(1, 3, 8, 8), 0.7, criterin="l1")


def test_prune_takes_a_spec_and_keywords_over_it():
    spec = PruneSpec(target_energy=0.8, criterion="l1", round_to=4)
    result = energyprune.prune(_cnn(), torch.randn(1, 3, 8, 8), spec=spec, round_to=2)
    assert result.plan.spec["criterion"] == "l1" and result.plan.spec["round_to"] == 2
    assert result.plan.spec["target_energy"] == 0.8


def test_naming_one_target_drops_the_other():
    spec = PruneSpec(target_energy=0.8)
    cnn, x = _cnn(), torch.randn(1, 3, 8, 8)
    dense_j = energyprune.profile(cnn, x).total.energy_j
    result = energyprune.prune(cnn, x, spec=spec, max_joules=0.9 * dense_j)
    assert result.plan.spec["target_energy"] is None
    assert result.plan.spec["max_joules"] == pytest.approx(0.9 * dense_j)


def test_run_settings_on_an_example_batch_are_refused():
    with pytest.raises(ConfigError, match="regime= belongs to a language model"):
        energyprune.prune(_cnn(), torch.randn(1, 3, 8, 8), regime=object())


def test_measure_refuses_a_misspelt_lever():
    with pytest.raises(ConfigError, match="unknown setting 'devcie' for Deployment"):
        energyprune.measure(nn.Linear(3, 2), torch.randn(2, 3), meter=None, devcie="cpu")


def test_search_refuses_a_misspelt_setting(tmp_path):
    from energyprune.pipeline.search import search

    with pytest.raises(ConfigError, match="unknown setting 'trails' for ImageSearch"):
        search(_cnn(), None, tmp_path, trails=3)
