"""matplotlib plots of profiles and runs, written atomically as PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from energyprune.files import atomic_path

if TYPE_CHECKING:
    from energyprune.energy.pricing.estimates import EnergyProfile

__all__ = ["layer_labels", "plot_layer_energy", "plot_run"]


def layer_labels(layers) -> list[str]:
    """Layer names for a plot; a block that also has children (ResNet's ``layer1.0``) is priced
    for its own ops only (the residual add, the activation after it), and says so."""
    names = [layer.name for layer in layers]
    parents = {n for n in names for other in names if other.startswith(n + ".")}
    return [
        f"{layer.name} ({layer.type}'s own ops)" if layer.name in parents else layer.name
        for layer in layers
    ]


def plot_layer_energy(prof: EnergyProfile, path: str | os.PathLike[str], top: int = 30) -> None:
    """Horizontal stacked bars (compute, memory) of the ``top`` costliest layers, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = dict(zip((la.name for la in prof.layers), layer_labels(prof.layers), strict=True))
    layers = sorted(prof.layers, key=lambda layer: layer.energy_j, reverse=True)[:top][::-1]
    names = [labels[layer.name] for layer in layers]
    compute = [layer.compute_j * 1e3 for layer in layers]
    memory = [layer.memory_j * 1e3 for layer in layers]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(layers) + 1.6))
    ax.barh(names, compute, label="compute")
    ax.barh(names, memory, left=compute, label="memory")
    ax.set_xlabel("estimated energy per forward pass (mJ)")
    ax.set_title(f"{prof.model}: estimated energy per layer ({prof.hardware}, {prof.dtype})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _save(figure, path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


def plot_run(report: dict, before: EnergyProfile, after: EnergyProfile, folder) -> None:
    """Write energy_layers.png (per-layer estimate, before vs after) and accuracy_energy.png
    (validation top-1 along the steps, rolled-back attempts, final test point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    after_by_name = {layer.name: layer.energy_j for layer in after.layers}
    layers = [layer for layer in before.layers if layer.energy_j > 0]
    x = range(len(layers))
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers) + 2), 4))
    ax.bar([i - 0.2 for i in x], [1e6 * la.energy_j for la in layers], 0.4, label="before")
    ax.bar(
        [i + 0.2 for i in x],
        [1e6 * after_by_name.get(la.name, 0.0) for la in layers],
        0.4,
        label="after",
    )
    ax.set_xticks(list(x), layer_labels(layers), rotation=90, fontsize=6)
    ax.set_ylabel(f"estimated µJ per inference ({before.hardware})")
    ax.set_title("Per-layer energy before vs after pruning (estimated)")
    ax.legend()
    fig.tight_layout()
    _save(fig, Path(folder) / "energy_layers.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    accepted = [s for s in report["steps"] if s["accepted"]]
    rejected = [s for s in report["steps"] if not s["accepted"]]
    ax.plot(
        [1.0] + [s["energy_fraction"] for s in accepted],
        [100 * report["dense_val_top1"]] + [100 * s["val_top1"] for s in accepted],
        marker="o",
        label="validation, accepted steps",
    )
    if rejected:  # a legend entry for nothing would say something happened
        ax.scatter(
            [s["energy_fraction"] for s in rejected],
            [100 * s["val_top1"] for s in rejected],
            marker="x",
            color="red",
            label="rolled back (failed the guardrail)",
        )
    ax.scatter(
        [1 - report["energy_reduction"]],
        [100 * report["after"]["top1"]],
        marker="*",
        s=120,
        color="green",
        label="final, test split",
    )
    ax.set_xlabel(f"energy / dense, {report['energy_basis']}")
    ax.set_ylabel("top-1 (%)")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    _save(fig, Path(folder) / "accuracy_energy.png")
    plt.close(fig)
