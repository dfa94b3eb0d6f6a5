"""Shared fixtures: tiny models, the shared fixtures folder (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ENERGYPRUNE_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    path = SHARED / "fixtures"
    if not (path / "cifar10_resnet56.safetensors").is_file():
        pytest.skip(f"pretrained fixtures not found in {path} (set ENERGYPRUNE_SHARED)")
    return path
