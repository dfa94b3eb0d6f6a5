"""Written files honour the umask (as open() would) and stay atomic."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from energyprune.files import atomic_path, atomic_write_text


@pytest.fixture
def umask():
    previous = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_text_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_text(tmp_path / "report.json", "{}\n")
    with open(tmp_path / "plain.txt", "w") as f:  # the reference
        f.write("x")
    assert _mode(tmp_path / "report.json") == mode == _mode(tmp_path / "plain.txt")


def test_weights_and_saved_models_are_readable_by_others(tmp_path, umask):
    from energyprune.models.architectures import digits_cnn
    from energyprune.models.placement import example_input
    from energyprune.pruning.apply import prune
    from energyprune.pruning.export import save

    umask(0o022)
    model = digits_cnn().eval()
    result = prune(model, example_input(model, (1, 1, 8, 8)), target_energy=0.7)
    result.plan.arch = {"name": "digits_cnn"}
    folder = save(result, tmp_path / "pruned")
    for name in ("model.safetensors", "plan.json"):
        assert _mode(folder / name) == 0o644, name


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        torch.save({"x": 1}, tmp)
        raise RuntimeError("killed half-way")
    assert list(tmp_path.iterdir()) == []
