"""Unstructured and N:M sparsity; save/load without pickle; ONNX export."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.layers import make_permanent
from energyprune.models.zoo import build_model
from energyprune.pruning.apply import prune
from energyprune.pruning.export import export_onnx, load, save
from energyprune.pruning.sparse import nm_mask


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_hits_the_searched_sparsity(scope):
    model = build_model("resnet20").model.eval()
    x = torch.randn(1, 3, 32, 32)
    result = prune(
        model, x, 0.8, granularity="unstructured", hardware="eyeriss-65nm", sparsity_scope=scope
    )
    assert result.energy_ratio <= 0.8 * 1.01
    flat = torch.cat([w.flatten() for w in weights(make_permanent(result.model))])
    achieved = float((flat == 0).float().mean())
    assert abs(achieved - result.plan.target_sparsity) <= 0.005
    assert all(d["pattern"] == "unstructured" for d in result.plan.masks.values())


def test_nm_every_group_has_enough_zeros():
    model = build_model("resnet20").model.eval()
    result = prune(
        model, torch.randn(1, 3, 32, 32), 0.9, granularity="nm", hardware="eyeriss-65nm", nm=(2, 4)
    )
    assert result.energy_ratio <= 0.9 * 1.01 and result.plan.masks
    model = make_permanent(result.model)
    for name, digest in result.plan.masks.items():
        w = model.get_submodule(name.removesuffix(".weight")).weight.detach()
        groups = w.movedim(1, -1).reshape(-1, 4)
        assert ((groups == 0).sum(dim=1) >= 2).all(), name
        assert digest["pattern"] == "2:4"


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_keeps_largest(n, m):
    w = torch.randn(6, 16)
    mask = nm_mask(w, n, m)
    assert (mask.view(-1, m).sum(dim=1) == n).all()
    kept_min = (w.abs() * mask).view(-1, m).max(dim=1).values
    assert (kept_min > 0).all()


def test_sparsity_needs_a_zero_skipping_profile():
    model = build_model("resnet20").model
    with pytest.raises(ConfigError, match="zero_skipping"):
        prune(model, torch.randn(1, 3, 32, 32), 0.5, granularity="unstructured")


def test_save_load_round_trip_reads_no_pickle(tmp_path, monkeypatch):
    model = build_model("resnet20").model.eval()
    x = torch.randn(2, 3, 32, 32)
    result = prune(model, x, 0.5, round_to=4)
    save(result, tmp_path, arch="resnet20")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was read")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded, plan = load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), result.model.eval()(x))
    assert plan.widths == result.plan.widths


def test_save_load_sparse_model(tmp_path):
    model = build_model("resnet20").model.eval()
    result = prune(
        model, torch.randn(1, 3, 32, 32), 0.85, granularity="unstructured", hardware="eyeriss-65nm"
    )
    save(result, tmp_path, arch="resnet20")
    loaded, _ = load(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), result.model.eval()(x))


def test_load_rejects_other_folders(tmp_path):
    with pytest.raises(ConfigError, match="not a saved pruned model"):
        load(tmp_path)


def test_onnx_export_matches_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build_model("resnet20").model.eval()
    result = prune(model, torch.randn(1, 3, 32, 32), 0.5)
    path = export_onnx(result.model, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx")
    x = torch.randn(3, 3, 32, 32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = result.model.eval()(x).numpy()
    assert abs(got - want).max() < 1e-3


class _Body(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )


def test_a_class_defined_here_saves_without_a_recipe_and_loads_onto_an_instance(tmp_path):
    class LocalNet(nn.Module):  # not importable: no recipe can rebuild it
        def __init__(self):
            super().__init__()
            self.body, self.fc = _Body(), nn.Linear(32, 4)

        def forward(self, x):
            return self.fc(self.body(x).flatten(1))

    x = torch.randn(2, 3, 16, 16)
    result = prune(LocalNet().eval(), x, 0.6)
    folder = save(result, tmp_path / "local")  # arch=None works
    arch = json.loads((folder / "plan.json").read_text())["arch"]
    assert arch["class"].endswith("<locals>.LocalNet") and "needs a model" in arch["load"]
    with pytest.raises(ConfigError, match=r"pass a dense instance, .*model=.*LocalNet\(\.\.\.\)"):
        load(folder)
    loaded, _ = load(folder, model=LocalNet())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model.eval()(x))
    with pytest.raises(ConfigError, match=r"saved from a .*LocalNet, but model= is a Linear"):
        load(folder, model=nn.Linear(2, 2))
