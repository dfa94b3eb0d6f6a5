"""What the plots say: block-own-op labels, no legend entry for what did not happen."""

from __future__ import annotations

import torch
import torchvision

import energyprune.reports.plots as plots
from energyprune.energy.pricing.estimates import profile


def test_a_block_with_children_is_labelled_as_its_own_ops():
    prof = profile(torchvision.models.resnet18().eval(), torch.randn(1, 3, 64, 64))
    labels = dict(
        zip((la.name for la in prof.layers), plots.layer_labels(prof.layers), strict=True)
    )
    assert labels["layer1.0"] == "layer1.0 (BasicBlock's own ops)"
    assert labels["layer1.0.conv1"] == "layer1.0.conv1"


def _report(steps):
    return {"steps": steps, "dense_val_top1": 0.9, "energy_reduction": 0.5,
            "after": {"top1": 0.88}, "energy_basis": "estimated (horowitz-45nm)"}  # fmt: skip


def test_the_accuracy_plot_shows_rollbacks_only_when_there_were_some(tmp_path, monkeypatch):
    prof = profile(torch.nn.Linear(4, 2), torch.randn(1, 4))
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.__setitem__(path.name, fig))
    step = {"energy_fraction": 0.5, "val_top1": 0.89, "accepted": True}
    for steps, rolled_back in (([step], False), ([step, {**step, "accepted": False}], True)):
        plots.plot_run(_report(steps), prof, prof, tmp_path)
        ax = figures["accuracy_energy.png"].axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("rolled back" in t for t in legend) == rolled_back
        assert ax.get_xlabel() == "energy / dense, estimated (horowitz-45nm)"
