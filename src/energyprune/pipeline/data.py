"""Datasets: CIFAR-10 from the shared JPEG archive (decoded once, cached as uint8 tensors).

The archive (or an extracted ImageFolder tree with ``train/<class>/*.jpg`` and
``test/<class>/*.jpg``) is decoded with Pillow once and cached as safetensors under
``$ENERGYPRUNE_CACHE`` (default ``~/.cache/energyprune``), keyed by the source's size and mtime.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from energyprune.errors import ConfigError
from energyprune.files import atomic_path

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "ImageSplits", "batches", "load_cifar10", "normalize"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, 3, H, W) and int64 labels for the train and test splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _cache_dir() -> Path:
    return Path(os.environ.get("ENERGYPRUNE_CACHE", Path.home() / ".cache" / "energyprune"))


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _members(source: Path) -> Iterator[tuple[str, str, bytes]]:
    """(split, class, jpeg bytes) from an archive or an extracted tree, in sorted order."""
    if source.is_dir():
        for path in sorted(source.glob("*/*/*.jpg")):
            yield path.parent.parent.name, path.parent.name, path.read_bytes()
        return
    with tarfile.open(source) as tar:
        entries = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")),
            key=lambda m: m.name,
        )
        for member in entries:
            parts = Path(member.name).parts
            yield parts[-3], parts[-2], tar.extractfile(member).read()


def load_cifar10(source: str | os.PathLike[str]) -> ImageSplits:
    """Load CIFAR-10 from the shared JPEG archive or an extracted folder (cached after once)."""
    src = Path(source)
    if not src.exists():
        raise ConfigError(f"CIFAR-10 source {src} does not exist: pass the .tar.xz or its folder")
    stat = src.stat()
    key = hashlib.sha256(f"{src.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cache = _cache_dir() / f"cifar10-{key[:16]}.safetensors"
    if cache.is_file():
        t = load_file(str(cache))
        return ImageSplits(t["train_x"], t["train_y"], t["test_x"], t["test_y"])
    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for split, cls, blob in _members(src):
        if split in images and cls in CLASSES:
            images[split].append(_decode(blob))
            labels[split].append(CLASSES.index(cls))
    if not images["train"] or not images["test"]:
        raise ConfigError(f"{src} holds no train/<class>/*.jpg and test/<class>/*.jpg images")
    tensors = {
        f"{split}_x": torch.from_numpy(np.stack(images[split])).contiguous()
        for split in ("train", "test")
    } | {f"{split}_y": torch.tensor(labels[split]) for split in ("train", "test")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        save_file(tensors, str(tmp))
    return ImageSplits(**tensors)


def normalize(x: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float normalised with the fixtures' mean and std."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int = 500
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised evaluation batches in order."""
    for i in range(0, len(x), batch_size):
        yield normalize(x[i : i + batch_size]), y[i : i + batch_size]
