"""End-to-end driver used by the CLI: check inputs, run the loop (over seeds), write outputs.

Outputs in the run folder: ``report.json``, ``report.md``, ``energy_layers.png``,
``accuracy_energy.png``, ``plan.json``, ``model.safetensors``, ``profile_before.json``,
``profile_after.json`` (estimates), and ``checkpoint.json`` + ``checkpoint/`` for ``--resume``.
Inputs are checked before anything is written.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from energyprune.energy.model import profile
from energyprune.errors import ConfigError, MeterUnavailableError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.pipeline.data import Data
from energyprune.pipeline.finetune import is_main_process
from energyprune.pipeline.run import RunConfig, RunResult, run
from energyprune.pruning.export import save
from energyprune.reports.plots import plot_run
from energyprune.reports.report import run_markdown

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
    from energyprune.energy.meter import open_meter

    try:
        open_meter(device)
    except MeterUnavailableError:
        return None
    return device


def _write(
    result: RunResult,
    arch: str,
    cfg: RunConfig,
    data: Data,
    out: Path,
    dense: nn.Module,
) -> None:
    if not is_main_process():
        return
    example = example_input(dense, data.input_shape)
    before = profile(dense, example, cfg.hardware, name=arch, shapes_only=True)
    after = profile(result.model, example, cfg.hardware, name=arch, shapes_only=True)
    if result.plan is not None:
        save(result, out, arch=arch)
    atomic_write_text(out / "profile_before.json", before.to_json() + "\n")
    atomic_write_text(out / "profile_after.json", after.to_json() + "\n")
    atomic_write_text(out / "report.json", json.dumps(result.report, indent=2) + "\n")
    title = f"{arch} on {data.name}: prune to {cfg.target_energy:.0%} of dense energy"
    atomic_write_text(out / "report.md", run_markdown(result.report, title))
    plot_run(result.report, before, after, out)


def run_and_write(
    dense: nn.Module,
    data: Data,
    cfg: RunConfig,
    out: str | Path,
    *,
    arch: str,
    seeds: int = 1,
    resume: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    on_batch: Callable[[int, int, int, float], None] = lambda *a: None,
    on_step: Callable[[int, int], None] = lambda *a: None,
) -> RunResult | None:
    """Run over ``seeds`` seeds (each in its own folder when > 1), write reports; the first
    seed's run is the reported model, the others give stability (mean ± std of test top-1)."""
    import copy

    out = Path(out)
    meter = meter_device_for(device)
    results = []
    for i in range(seeds):
        folder = out if seeds == 1 else out / f"seed-{cfg.seed + i}"
        seeded = replace(cfg, seed=cfg.seed + i)
        result = run(
            copy.deepcopy(dense),
            data,
            seeded,
            folder,
            arch=arch,
            resume=resume,
            meter_device=meter,
            log=log,
            on_batch=on_batch,
            on_step=on_step,
        )
        if not result.report:  # interrupted: the checkpoint is what is left
            return None
        results.append(result)
    top1 = [r.report["after"]["top1"] for r in results]
    first = results[0]
    if seeds > 1:
        first.report["stability"] = {
            "top1": top1,
            "mean": statistics.fmean(top1),
            "std": statistics.pstdev(top1),
            "seeds": [cfg.seed + i for i in range(seeds)],
        }
    _write(first, arch, cfg, data, out, dense)
    return first
