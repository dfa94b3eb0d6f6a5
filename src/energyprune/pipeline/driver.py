"""End-to-end driver used by the CLI: check inputs, run the loop (over seeds), write outputs.

Outputs in the run folder: ``report.json``, ``report.md``, ``energy_layers.png``,
``accuracy_energy.png``, ``plan.json``, ``model.safetensors``, ``profile_before.json``,
``profile_after.json`` (estimates), and the run loop's checkpoint for ``--resume``.
Inputs are checked before anything is written.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from energyprune.errors import ConfigError, MeterUnavailableError
from energyprune.models.placement import example_input
from energyprune.pipeline.data import Data
from energyprune.pipeline.finetune import is_main_process
from energyprune.pipeline.kinds import kind_for
from energyprune.pipeline.run import Hooks, RunConfig, RunResult, run_kind

__all__ = ["check_compatible", "meter_device_for", "run_and_write"]


def check_compatible(model: nn.Module, data: Data, name: str) -> None:
    """The model must accept the data's samples and have one output per class."""
    try:
        with torch.no_grad():
            out = model.eval()(example_input(model, data.input_shape, zeros=True))
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"model '{name}' cannot take {data.name} samples of shape "
            f"{tuple(data.input_shape[1:])} ({str(e).splitlines()[0]}); pick a model for this data"
        ) from e
    if out.shape[-1] != data.num_classes:
        raise ConfigError(
            f"class-count mismatch: model '{name}' has {out.shape[-1]} outputs but {data.name} "
            f"has {data.num_classes} classes; use a model built for {data.num_classes} classes"
        )


def meter_device_for(device: str) -> str | None:
    """``device`` if it has a readable energy meter, else None (energy is then estimated)."""
    from energyprune.energy.measurement.meters import open_meter

    try:
        open_meter(device)
    except MeterUnavailableError:
        return None
    return device


def run_and_write(
    dense: nn.Module,
    data: Data,
    cfg: RunConfig,
    out: str | Path,
    *,
    arch: str,
    resume: bool = False,
    device: str = "cpu",
    hooks: Hooks | None = None,
) -> RunResult | None:
    """Run over ``cfg.seeds`` seeds (each in its own folder when > 1), write reports; the first
    seed's run is the reported model, the others give stability (mean ± std of test top-1)."""
    import copy

    out = Path(out)
    seeds = cfg.seeds
    kind = kind_for(data, cfg, arch, meter_device_for(device))
    results = []
    for i in range(seeds):
        folder = out if seeds == 1 else out / f"seed-{cfg.seed + i}"
        seeded = replace(cfg, seed=cfg.seed + i)
        result = run_kind(
            kind.with_seed(seeded.seed),
            copy.deepcopy(dense),
            seeded,
            folder,
            resume=resume,
            hooks=hooks,
        )
        if not result.report:  # interrupted: the checkpoint is what is left
            return None
        results.append(result)
    quality = [kind.quality_of(r.report) for r in results]
    first = results[0]
    if seeds > 1:
        first.report["stability"] = {
            "quality": quality,
            "top1": quality,  # older readers
            "mean": statistics.fmean(quality),
            "std": statistics.pstdev(quality),
            "seeds": [cfg.seed + i for i in range(seeds)],
        }
    if is_main_process():
        kind.write(first, out, dense)
    return first
