"""Pruning × precision: for one energy target, "prune more" (fp32) against "prune less + int8".

Both options are run for real — prune → fine-tune with the guardrail, then int8 with its own
guardrail — and judged on the same terms: estimated energy against the target (int8 layers priced
as int8 in the same energy model), validation top-1 against the dense model's, and for int8 the
measured latency (and energy where a meter exists) against its float twin. The choice is the most
accurate option that meets the target and the guardrail and is not measured slower or costlier;
none when neither holds (the report says why for each).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from energyprune.energy.measurement.noise import TOO_NOISY
from energyprune.energy.pricing.estimates import profile
from energyprune.errors import ConfigError
from energyprune.files import atomic_write_text
from energyprune.models.placement import example_input
from energyprune.pipeline.data import Data
from energyprune.pipeline.driver import run_and_write
from energyprune.pipeline.evaluate import top1
from energyprune.pipeline.int8 import int8_with_guardrail, save_int8
from energyprune.pipeline.run import Hooks, RunConfig
from energyprune.pipeline.steps import prune_step
from energyprune.pruning.plan import PruningPlan

__all__ = ["choose", "int8_energy_ratio", "prune_or_quantize", "relaxed_target"]

PRUNE, PRUNE_INT8 = "prune", "prune+int8"


def int8_energy_ratio(model: nn.Module, example: torch.Tensor, hardware: str) -> float:
    """Estimated energy with every conv/linear layer in int8 over the fp32 estimate."""
    layers = [
        n for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    fp32 = profile(model, example, hardware).total.energy_j
    int8 = profile(model, example, hardware, layer_dtypes=dict.fromkeys(layers, "int8"))
    return int8.total.energy_j / fp32


def relaxed_target(
    dense: nn.Module,
    example: torch.Tensor,
    cfg: RunConfig,
    rounds: int = 4,
    data: Data | None = None,
) -> float:
    """The fp32 pruning target whose int8 version meets ``cfg.target_energy``.

    The int8 discount depends on what is left after pruning (pooling, element-wise work and
    launches do not shrink with int8), so the target is found by fixed-point iteration on
    one-shot prunes: t ← target / ratio(pruned to t).
    """
    dense_j = profile(dense, example, cfg.hardware).total.energy_j
    t = min(1.0, cfg.target_energy / int8_energy_ratio(dense, example, cfg.hardware))
    for _ in range(rounds):
        if t >= 1.0:
            return 1.0
        try:
            pruned = prune_step(dense, example, cfg, t * dense_j, data).model
        except ConfigError:  # unreachable: the pipeline will say so
            return t
        t_next = min(1.0, cfg.target_energy / int8_energy_ratio(pruned, example, cfg.hardware))
        if abs(t_next - t) < 1e-3:
            return t_next
        t = t_next
    return t


def _pruned(dense, data, cfg: RunConfig, target: float, out: Path, arch: str, **run_kw):
    """(model, plan) after the pipeline to ``target``; the dense model itself at 1.0."""
    if target >= 1.0:
        plan = PruningPlan.unpruned(dense, arch, data.input_shape, cfg.hardware)
        return copy.deepcopy(dense).eval(), plan
    cfg = cfg.with_target(target)
    result = run_and_write(dense, data, cfg, out, arch=arch, **run_kw)
    if result is None:
        raise KeyboardInterrupt
    plan = result.plan_for(arch, cfg.hardware, data.input_shape)
    return result.model.cpu().eval(), plan


def prune_or_quantize(
    dense: nn.Module,
    data: Data,
    cfg: RunConfig,
    out: str | Path,
    *,
    arch: str,
    int8: dict[str, Any] | None = None,
    **run_kw: Any,
) -> dict[str, Any]:
    """Run both options to ``cfg.target_energy`` and choose; writes ``out/prune``,
    ``out/prune+int8`` (with its ``int8`` folder) and ``out/tradeoff.json``.

    Args:
        dense: the trained dense model.
        data: loaders; validation decides, test is reported.
        cfg: the pipeline settings; ``target_energy`` is the budget of both options.
        arch: model spec to rebuild the architecture.
        int8: settings for :func:`~energyprune.pipeline.int8.int8_with_guardrail` (qat, compile,
            protocol, calibration_batches).
        run_kw: passed to :func:`~energyprune.pipeline.driver.run_and_write` (``resume``,
            ``device``, ``hooks``: its log is this function's too).

    Returns:
        The trade-off report (also in ``tradeoff.json``).
    """
    out = Path(out)
    log = (run_kw.get("hooks") or Hooks()).log
    dense = dense.cpu().eval()  # int8 quantises on the CPU
    example = example_input(dense, data.input_shape)
    dense_j = profile(dense, example, cfg.hardware).total.energy_j
    dense_val = top1(dense, data.val, data.num_classes)
    ratio = int8_energy_ratio(dense, example, cfg.hardware)
    relaxed = relaxed_target(dense, example, cfg, data=data)
    log(
        f"int8 prices the dense model at {ratio:.3f} of fp32 ({cfg.hardware}, estimated): "
        f"'{PRUNE_INT8}' prunes to {relaxed:.3f} of dense, then int8"
    )
    ctx = _Context(dense, data, cfg, example, dense_j, dense_val, arch, log, run_kw)
    options = [_prune_option(ctx, out / PRUNE), _int8_option(ctx, out / PRUNE_INT8, relaxed, int8)]
    chosen = choose(options, cfg, dense_val)
    report = {
        "target_energy": cfg.target_energy,
        "hardware": cfg.hardware,
        "energy_basis": f"estimated ({cfg.hardware}); int8 latency measured",
        "dense_val_top1": dense_val,
        "validation": data.val_source,
        "int8_energy_ratio": ratio,
        "options": options,
        "choice": chosen["option"] if chosen else None,
        "reason": _reason(chosen, options),
    }
    atomic_write_text(out / "tradeoff.json", json.dumps(report, indent=2) + "\n")
    return report


@dataclass(frozen=True)
class _Context:
    """What both options share: the dense model and its figures, the run settings."""

    dense: nn.Module
    data: Data
    cfg: RunConfig
    example: torch.Tensor
    dense_j: float
    dense_val: float
    arch: str
    log: Callable[[str], None]
    run_kw: dict[str, Any]


def _prune_option(c: _Context, folder: Path) -> dict[str, Any]:
    """'prune': fp32, pruned all the way to the target."""
    cfg, data = c.cfg, c.data
    model, _ = _pruned(c.dense, data, cfg, cfg.target_energy, folder, c.arch, **c.run_kw)
    return {
        "option": PRUNE,
        "folder": str(folder),
        "pruning_target": cfg.target_energy,
        "energy_fraction": profile(model, c.example, cfg.hardware).total.energy_j / c.dense_j,
        "val_top1": top1(model, data.val, data.num_classes),
        "test_top1": top1(model, data.test, data.num_classes) if data.test else None,
        "measured_verdict": None,
    }


def _int8_option(c: _Context, folder: Path, relaxed: float, int8: dict | None) -> dict[str, Any]:
    """'prune+int8': pruned less (to ``relaxed``), then int8 within what the guardrail has left."""
    cfg, data = c.cfg, c.data
    model, plan = _pruned(c.dense, data, cfg, relaxed, folder, c.arch, **c.run_kw)
    left = cfg.max_acc_drop - 100 * (c.dense_val - top1(model, data.val, data.num_classes))
    option: dict[str, Any] = {"option": PRUNE_INT8, "folder": str(folder / "int8")}
    option["pruning_target"] = relaxed
    try:
        q, report = int8_with_guardrail(
            model,
            data,
            c.arch,
            hardware=cfg.hardware,
            max_acc_drop=max(left, 0.0),
            **(int8 or {}),
        )
    except ConfigError as e:
        option.update(energy_fraction=None, val_top1=None, test_top1=None, failed=str(e))
        return option
    save_int8(q, report, model, plan, folder / "int8")
    option.update(
        energy_fraction=report["estimated_energy_j"]["int8"] / c.dense_j,
        val_top1=report["val_top1"]["int8"],
        test_top1=(report["test_top1"] or {}).get("int8"),
        float_layers=report["float_layers"],
        method=report["method"],
        measured_verdict=report["measurement"]["verdict"],
        measured_recommended=report["recommended"],
    )
    return option


def choose(options: list[dict[str, Any]], cfg: RunConfig, dense_val: float) -> dict | None:
    """Judge each option (target, guardrail, measurement) and return the eligible one with the
    best validation top-1 (ties: the lower estimated energy), or None."""
    for o in options:
        _judge(o, cfg, dense_val)
    eligible = [o for o in options if o["eligible"]]
    return max(eligible, key=lambda o: (o["val_top1"], -o["energy_fraction"]), default=None)


def _judge(o: dict[str, Any], cfg: RunConfig, dense_val: float) -> None:
    """Mark whether an option meets the target and the guardrail (and the measurement)."""
    o["meets_target"] = o["energy_fraction"] is not None and (
        o["energy_fraction"] <= cfg.target_energy * 1.01
    )
    o["within_guardrail"] = o["val_top1"] is not None and (
        100 * (dense_val - o["val_top1"]) <= cfg.max_acc_drop
    )
    # a noisy measurement (None) neither qualifies nor disqualifies: the reason says so
    o["eligible"] = (
        o["meets_target"]
        and o["within_guardrail"]
        and o.get("measured_recommended", True) is not False
    )


def _why_out(option: dict) -> str:
    return (
        option.get("failed")
        or (not option["meets_target"] and "it misses the energy target")
        or (not option["within_guardrail"] and "it breaks the accuracy guardrail")
        or option.get("measured_verdict")
        or "not eligible"
    )


def _reason(chosen: dict | None, options: list[dict]) -> str:
    noisy = [
        o for o in options if "measured_recommended" in o and o["measured_recommended"] is None
    ]
    note = "".join(
        f"; '{o['option']}' was judged without its measurement ({TOO_NOISY})" for o in noisy
    )
    return _chosen_because(chosen, options) + note


def _chosen_because(chosen: dict | None, options: list[dict]) -> str:
    if chosen is None:
        return "neither option holds: " + "; ".join(
            f"'{o['option']}': {_why_out(o)}" for o in options
        )
    other = next(o for o in options if o is not chosen)
    if not other["eligible"]:
        return f"'{other['option']}' is out: {_why_out(other)}"
    if chosen["val_top1"] == other["val_top1"]:
        return "equal validation top-1; lower estimated energy"
    return (
        f"higher validation top-1 ({100 * chosen['val_top1']:.2f} % vs "
        f"{100 * other['val_top1']:.2f} %) within the same energy target"
    )
