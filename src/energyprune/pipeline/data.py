"""Datasets for the prune → fine-tune → evaluate pipeline.

``--data`` specs: ``digits`` (scikit-learn's bundled 8x8 digits, the built-in default),
``cifar10:PATH`` (the shared JPEG archive or its extracted folder), ``imagefolder:PATH``
(``PATH/train/<class>/*`` and ``PATH/test/<class>/*``, images of one size) and
``module:factory`` (returns train and validation DataLoaders, optionally a test one).

Image folders are decoded with Pillow once and cached as uint8 safetensors under
``$ENERGYPRUNE_CACHE`` (default ``~/.cache/energyprune``), keyed by the source's path, size and
mtime; a newer copy of one source replaces the older one. A validation split carved from train
(seeded), or with ``val_from="test"`` a fixed half of test, drives every decision; the test
split is used only for the final report.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_path, cache_dir

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "Data",
    "ImageSplits",
    "batches",
    "load_cifar10",
    "load_data",
    "load_image_folder",
    "normalize",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, C, H, W) and int64 labels for the train and test splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = ()


@dataclass
class Data:
    """Loaders and facts the pipeline needs."""

    name: str
    train: DataLoader
    val: DataLoader
    test: DataLoader | None
    num_classes: int
    input_shape: tuple[int, ...]  # one sample with a batch dimension of 1
    val_source: str = "the factory's validation loader"  # where val came from, for reports


#: What a damaged archive or image raises while it is read.
_DAMAGED = (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zlib.error, ValueError, IndexError)


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return array.transpose(2, 0, 1)


def _members(
    source: Path, progress: Callable[[int, int], None]
) -> Iterator[tuple[str, str, bytes]]:
    """(split, class, image bytes) from an archive or an extracted tree, in sorted order;
    ``progress(done, total)`` after each image."""
    suffixes = (".jpg", ".jpeg", ".png")
    if source.is_dir():
        paths = sorted(p for p in source.glob("*/*/*") if p.suffix.lower() in suffixes)
        for i, path in enumerate(paths, 1):
            yield path.parent.parent.name, path.parent.name, path.read_bytes()
            progress(i, len(paths))
        return
    with tarfile.open(source) as tar:
        entries = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(suffixes)),
            key=lambda m: m.name,
        )
        for i, member in enumerate(entries, 1):
            parts = Path(member.name).parts
            yield parts[-3], parts[-2], tar.extractfile(member).read()
            progress(i, len(entries))


def load_image_folder(
    source: str | os.PathLike[str], progress: Callable[[int, int], None] = lambda done, n: None
) -> ImageSplits:
    """Decode ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``) images, cached once
    (CIFAR-10: ~20 s on first use; ``progress(done, total)`` reports it)."""
    src = Path(source)
    if not src.exists():
        raise ConfigError(f"data path {src} does not exist: pass an archive or a folder")
    stat = src.stat()
    where = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    state = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    cache = cache_dir() / f"images-{where}-{state}.safetensors"
    if cache.is_file():
        try:
            t = load_file(str(cache))
            classes = tuple(bytes(t.pop("classes").tolist()).decode().split("\n"))
            return ImageSplits(**t, classes=classes)
        except Exception:  # our own cache, damaged (disk full, killed copy): decode again
            cache.unlink(missing_ok=True)
    found: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    try:
        for split, cls, blob in _members(src, progress):
            split = "test" if split == "val" else split
            if split in found:
                found[split].append((cls, _decode(blob)))
    except _DAMAGED as e:  # a cut archive ends in EOFError, a bad image in OSError
        raise ConfigError(
            f"cannot read images from {src}: it is damaged ({type(e).__name__}: "
            f"{first_line(e)}); replace it with a good copy"
        ) from e
    if not found["train"] or not found["test"]:
        raise ConfigError(
            f"{src} holds no train/<class>/ and test/<class>/ images: pass a folder or archive "
            "in that layout"
        )
    classes = tuple(sorted({cls for cls, _ in found["train"]}))
    shapes = {img.shape for items in found.values() for _, img in items}
    if len(shapes) != 1:
        raise ConfigError(f"images in {src} differ in size ({sorted(shapes)[:3]}): resize them")
    tensors = {}
    for split, items in found.items():
        tensors[f"{split}_x"] = torch.from_numpy(np.stack([img for _, img in items])).contiguous()
        tensors[f"{split}_y"] = torch.tensor([classes.index(c) for c, _ in items])
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        names = torch.tensor(list("\n".join(classes).encode()), dtype=torch.uint8)
        save_file({**tensors, "classes": names}, str(tmp))
    for stale in cache.parent.glob(f"images-{where}-*.safetensors"):
        if stale != cache:  # an older copy of the same source (~180 MB for CIFAR-10)
            stale.unlink(missing_ok=True)
    return ImageSplits(**tensors, classes=classes)


def load_cifar10(
    source: str | os.PathLike[str], progress: Callable[[int, int], None] = lambda done, n: None
) -> ImageSplits:
    """CIFAR-10 from the shared JPEG archive or its extracted folder (classes checked)."""
    splits = load_image_folder(source, progress)
    if splits.classes != CIFAR10_CLASSES:
        raise ConfigError(f"{source} is not CIFAR-10: found classes {splits.classes[:4]}…")
    return splits


def normalize(x: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """uint8 (N, C, H, W) → float normalised with ``mean`` and ``std`` (per channel)."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int = 500
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised CIFAR evaluation batches in order."""
    for i in range(0, len(x), batch_size):
        yield normalize(x[i : i + batch_size]), y[i : i + batch_size]


class TensorImages(Dataset):
    """Images held as one tensor, normalised per sample, with optional crop + flip."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, augment: bool) -> None:
        self.x, self.y, self.augment = x, y, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i].float()
        img = img / 255.0 if self.x.dtype == torch.uint8 else img
        if self.augment:
            h, w = img.shape[-2:]
            padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
            top, left = torch.randint(0, 9, (2,)).tolist()
            img = padded[:, top : top + h, left : left + w]
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return (img - self.mean) / self.std, self.y[i]


def _loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(val_fraction * n))
    return order[n_val:], order[:n_val]


@dataclass(frozen=True)
class _Pixels:
    """How images are fed: normalised by (mean, std) per channel, augmented when training."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool


def _from_arrays(name: str, splits: ImageSplits, pixels: _Pixels, o: _Options) -> Data:
    batch_size, val_fraction, seed, val_from = o.batch_size, o.val_fraction, o.seed, o.val_from
    mean, std, augment = pixels.mean, pixels.std, pixels.augment
    tx, ty = splits.train_x, splits.train_y
    sx, sy = splits.test_x, splits.test_y
    if val_from == "train":
        train_idx, val_idx = _split(len(ty), val_fraction, seed)
        vx, vy, tx, ty = tx[val_idx], ty[val_idx], tx[train_idx], ty[train_idx]
        source = f"{val_fraction:.0%} of train (seed {seed})"
    else:  # a model trained on all of train has seen every train image: hold out test instead
        test_idx, val_idx = _split(len(sy), 0.5, 4321)  # fixed: the test half never moves
        vx, vy, sx, sy = sx[val_idx], sy[val_idx], sx[test_idx], sy[test_idx]
        source = f"half of test ({len(vy)} images, fixed); test reports the other {len(sy)}"
    make = lambda x, y, aug: TensorImages(x, y, mean, std, aug)  # noqa: E731
    return Data(
        name=name,
        train=_loader(make(tx, ty, augment), batch_size, True, seed),
        val=_loader(make(vx, vy, False), 512, False, seed),
        test=_loader(make(sx, sy, False), 512, False, seed),
        num_classes=len(splits.classes) if splits.classes else int(splits.train_y.max()) + 1,
        input_shape=(1, *tx.shape[1:]),
        val_source=source,
    )


def _digits(o: _Options) -> Data:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_test = len(y) // 5  # a fixed 20 % test split, independent of the run's seed
    test, train = order[:n_test], order[n_test:]
    splits = ImageSplits(x[train], y[train], x[test], y[test], tuple(str(d) for d in range(10)))
    return _from_arrays("digits", splits, _Pixels((0.5,), (0.5,), False), o)


def _factory(spec: str) -> Data:
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import data factory '{spec}' ({e})") from e
    loaders = factory()
    if not isinstance(loaders, (tuple, list)) or len(loaders) not in (2, 3):
        raise ConfigError(f"data factory '{spec}' must return (train, val) or (train, val, test)")
    train, val, *rest = loaders
    x, y = next(iter(train))
    labels = torch.cat([b[1] for b in val])
    return Data(
        spec,
        train,
        val,
        rest[0] if rest else None,
        int(max(labels.max(), y.max())) + 1,
        (1, *x.shape[1:]),
    )


def load_data(
    spec: str = "digits",
    *,
    batch_size: int = 128,
    val_fraction: float = 0.1,
    seed: int = 0,
    val_from: str = "train",
    progress: Callable[[int, int], None] = lambda done, n: None,
) -> Data:
    """Loaders for a ``--data`` spec (see the module docstring).

    ``val_from="test"`` takes the validation split from a fixed half of test (the report's test
    is then the other half): use it for a model trained on all of train, such as the CIFAR
    fixtures, whose accuracy on train images says little about unseen ones. ``progress(done,
    total)`` follows the first decode of an image archive or folder.
    """
    if val_from not in ("train", "test"):
        raise ConfigError(f"val_from must be 'train' or 'test', got '{val_from}'")
    kind, _, rest = spec.partition(":")
    opts = _Options(batch_size, val_fraction, seed, val_from, progress)
    if kind in SOURCES and bool(rest) == (kind != "digits"):
        return SOURCES[kind](rest, opts)
    if rest and ("." in kind or kind.isidentifier()):
        if val_from != "train":
            raise ConfigError(
                f"--val-from {val_from} does not apply to a data factory ('{spec}'): it returns "
                "its own validation loader; build it from the split you want"
            )
        return _factory(spec)
    raise ConfigError(
        f"unknown data spec '{spec}': use digits, cifar10:PATH, imagefolder:PATH or "
        "package.module:factory"
    )


@dataclass(frozen=True)
class _Options:
    batch_size: int
    val_fraction: float
    seed: int
    val_from: str
    progress: Callable[[int, int], None]


def _digits_source(_: str, o: _Options) -> Data:
    return _digits(o)


def _cifar10_source(path: str, o: _Options) -> Data:
    splits = load_cifar10(path, o.progress)
    return _from_arrays("cifar10", splits, _Pixels(CIFAR10_MEAN, CIFAR10_STD, True), o)


def _imagefolder_source(path: str, o: _Options) -> Data:
    splits = load_image_folder(path, o.progress)
    sample = splits.train_x[:2048].float() / 255.0
    mean = tuple(sample.mean(dim=(0, 2, 3)).tolist())
    std = tuple(sample.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return _from_arrays(f"imagefolder:{path}", splits, _Pixels(mean, std, True), o)


#: ``--data`` kind → loader of ``(path after the colon, options)``; anything else with a colon
#: is a ``module:factory``
SOURCES: dict[str, Callable[[str, _Options], Data]] = {
    "digits": _digits_source,
    "cifar10": _cifar10_source,
    "imagefolder": _imagefolder_source,
}
