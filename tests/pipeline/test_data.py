"""Data specs: digits splits, image folders, CIFAR-10 archive, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from energyprune.errors import ConfigError
from energyprune.pipeline.data import load_cifar10, load_data
from tests.conftest import SHARED, shared_or_skip


def test_digits_splits_are_disjoint_and_seeded():
    a, b = load_data("digits", seed=0), load_data("digits", seed=0)
    assert a.num_classes == 10 and a.input_shape == (1, 1, 8, 8)
    sizes = [len(a.train.dataset), len(a.val.dataset), len(a.test.dataset)]
    assert sum(sizes) == 1797 and sizes[2] == 359
    assert torch.equal(a.val.dataset.x, b.val.dataset.x)
    c = load_data("digits", seed=1)
    assert not torch.equal(a.val.dataset.x, c.val.dataset.x)
    assert torch.equal(a.test.dataset.x, c.test.dataset.x)  # the test split never moves


@pytest.mark.parametrize("seed", [0, 1])
def test_validation_from_test(seed):
    train = load_data("digits", seed=seed)
    held = load_data("digits", seed=seed, val_from="test")
    x_val, x_test = held.val.dataset.x, held.test.dataset.x
    assert len(held.train.dataset) == 1797 - 359  # all of train is for training
    assert len(x_val) + len(x_test) == len(train.test.dataset) == 359
    rows = {tuple(r.flatten().tolist()) for r in train.test.dataset.x}
    assert all(tuple(r.flatten().tolist()) in rows for r in torch.cat([x_val, x_test]))
    assert not {tuple(r.flatten().tolist()) for r in x_val} & {
        tuple(r.flatten().tolist()) for r in x_test
    }
    assert torch.equal(x_val, load_data("digits", seed=1 - seed, val_from="test").val.dataset.x)
    assert held.val_source.startswith("half of test") and "seed" in train.val_source
    with pytest.raises(ConfigError, match="val_from must be"):
        load_data("digits", val_from="val")


def test_image_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYPRUNE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog", "eel"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    calls = []
    spec = f"imagefolder:{tmp_path / 'imgs'}"
    data = load_data(spec, batch_size=4, progress=lambda done, n: calls.append((done, n)))
    assert calls == [(i, 24) for i in range(1, 25)]  # every image, in order, of a known total
    load_data(spec, progress=lambda done, n: calls.append((done, n)))
    assert len(calls) == 24  # cached: nothing to decode, no progress
    assert data.num_classes == 3 and data.input_shape == (1, 3, 12, 12)
    x, _ = next(iter(data.train))
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32
    assert len(data.test.dataset) == 6
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1  # decoded once, cached
    (tmp_path / "imgs" / "train" / "cat" / "0.png").rename(tmp_path / "imgs" / "x.png")
    os.utime(tmp_path / "imgs", ns=(1, 1))  # the source changed: a new key
    assert load_data(f"imagefolder:{tmp_path / 'imgs'}").num_classes == 3
    now = list((tmp_path / "cache").iterdir())
    assert len(now) == 1 and now != cached  # the stale copy was replaced, not kept beside


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cifar10:/no/such/path", "does not exist"),
        ("nonsense", "unknown data spec"),
        ("imagefolder:/no/where", "does not exist"),
        ("nomod_xyz:make", "cannot import"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_data(spec)


def test_cifar10_archive():
    archive = shared_or_skip(SHARED / "datasets" / "cifar10-jpeg.tar.xz", "CIFAR-10 archive")
    splits = load_cifar10(archive)
    assert splits.train_x.shape == (50_000, 3, 32, 32) and splits.test_x.shape[0] == 10_000
    assert splits.classes[0] == "airplane" and int(splits.test_y.bincount().min()) == 1000


def test_module_factory_spec():
    data = load_data("tests.pipeline.factories:digits_loaders")
    assert data.num_classes == 10 and data.input_shape == (1, 1, 8, 8) and data.test is None
