"""Shared fixtures: tiny models, the shared fixtures folder (an error under CI when absent,
else a skip)."""

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


def shared_or_skip(path: Path, what: str) -> Path:
    """``path`` when it exists. Missing, it is an error under CI (``CI=true``), which always
    has ``../shared``: a skip there could only hide a broken path. Elsewhere it is a skip."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (set ENERGYPRUNE_SHARED to the shared folder)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


@pytest.fixture
def fixtures_dir() -> Path:
    path = SHARED / "fixtures"
    shared_or_skip(path / "cifar10_resnet56.safetensors", "pretrained fixtures")
    return path


@pytest.fixture
def tiny_bert():
    """A small Hugging Face BERT built from a config (no download) and token-id inputs."""
    transformers = pytest.importorskip("transformers")

    def make(
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        intermediate: int = 256,
        tokens: int = 64,
        pooler: bool = False,
    ):
        cfg = transformers.BertConfig(
            vocab_size=50,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=tokens,
        )
        model = transformers.BertModel(cfg, add_pooling_layer=pooler).eval()
        return model, {"input_ids": torch.randint(0, 50, (2, tokens))}

    return make


@pytest.fixture(scope="session")
def trained_digits():
    """digits_cnn trained for a few epochs on the digits splits (shared: it takes seconds)."""
    from energyprune.models.architectures import digits_cnn
    from energyprune.pipeline.data import load_data
    from energyprune.pipeline.finetune import TrainConfig, finetune

    torch.manual_seed(0)
    data = load_data("digits", batch_size=64)
    model = digits_cnn()
    finetune(model, data.train, TrainConfig(epochs=10, lr=3e-3, optimizer="adamw"))
    return model.eval(), data
