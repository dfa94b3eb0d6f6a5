"""Save, load and export pruned models without pickle.

A saved directory holds ``plan.json`` (settings, removal rounds, widths, masks digests and the
architecture recipe) and ``model.safetensors`` (the pruned state dict, masks folded in).
Loading rebuilds the dense architecture from its recipe (or takes a dense instance the caller
passes, for a class defined in a script or notebook), replays the plan, then loads the weights
strictly. No code or pickle is read from the directory.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from energyprune.errors import ConfigError, first_line
from energyprune.files import atomic_path, atomic_write_text, read_text
from energyprune.models.layers import folded_copy
from energyprune.models.zoo import build_model, load_weights
from energyprune.pruning.plan import PruningPlan, replay

__all__ = ["export_onnx", "load", "save", "save_model"]

PLAN_FILE = "plan.json"
WEIGHTS_FILE = "model.safetensors"


def save(result: Any, directory: str | os.PathLike[str], arch: str | None = None) -> Path:
    """Write ``plan.json`` and ``model.safetensors`` for a :class:`PruneResult`.

    Args:
        result: the prune result.
        directory: output folder (created; files written atomically).
        arch: model spec to rebuild the dense architecture (built-in name, torchvision name or
            ``module:factory``); defaults to the plan's recorded ``arch``. Without either, the
            plan records the class, and loading needs a dense instance (``load(dir, model=)``).
    """
    plan: PruningPlan = copy.deepcopy(result.plan)
    if arch is not None:
        plan.arch = {"name": arch}
    return save_model(result.model, plan, directory)


def save_model(model: nn.Module, plan: PruningPlan, directory: str | os.PathLike[str]) -> Path:
    """Write ``plan.json`` and ``model.safetensors`` (masks folded in) atomically."""
    cls = type(model).__qualname__
    plan.arch = {**(plan.arch or {}), "class": cls}
    if not plan.arch.get("name"):
        plan.arch["load"] = f"needs a model: energyprune.load(folder, model=<a dense {cls}>)"
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = folded_copy(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "producer": "energyprune"})
    atomic_write_text(out / PLAN_FILE, plan.to_json() + "\n")
    return out


def load(
    directory: str | os.PathLike[str], model: nn.Module | None = None
) -> tuple[nn.Module, PruningPlan]:
    """Rebuild a saved pruned model: recipe (or a copy of the dense ``model`` given) → replay
    the plan → load safetensors. ``model`` is left untouched."""
    folder = Path(directory)
    plan_path, weights = folder / PLAN_FILE, folder / WEIGHTS_FILE
    if not plan_path.is_file() or not weights.is_file():
        raise ConfigError(
            f"{folder} is not a saved pruned model: it needs {PLAN_FILE} and {WEIGHTS_FILE} "
            "(written by `energyprune prune --out` or energyprune.save)"
        )
    try:
        data = json.loads(read_text(plan_path, "plan"))
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        plan = PruningPlan.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(
            f"{plan_path} is not a valid plan ({first_line(e)}): save the model again"
        ) from e
    model = _dense(plan, plan_path, model)
    try:
        replay(model, plan)
    except ConfigError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise ConfigError(
            f"{plan_path} does not replay on its architecture ({type(e).__name__}: "
            f"{first_line(e)}): the plan is damaged; save the model again"
        ) from e
    load_weights(model, weights)
    return model, plan


def _dense(plan: PruningPlan, plan_path: Path, given: nn.Module | None) -> nn.Module:
    arch = plan.arch or {}
    cls = arch.get("class")
    if given is not None:
        if cls and type(given).__qualname__ != cls:
            raise ConfigError(
                f"{plan_path} was saved from a {cls}, but model= is a "
                f"{type(given).__qualname__}: pass a dense {cls}"
            )
        return copy.deepcopy(given).eval()
    if not arch.get("name"):
        raise ConfigError(
            f"{plan_path} has no recipe to rebuild {cls or 'the model'}: pass a dense instance, "
            f"energyprune.load(folder, model={cls or 'MyModel'}(...))"
        )
    try:
        return build_model(arch["name"]).model.eval()
    except ConfigError as e:  # a damaged or foreign recipe: say which file holds it
        raise ConfigError(f"{plan_path} names a model that cannot be built: {e}") from e


def export_onnx(
    model: nn.Module, example_inputs: torch.Tensor, path: str | os.PathLike[str]
) -> Path:
    """Export to ONNX with PyTorch's ``torch.export``-based exporter (masks folded in), with a
    dynamic batch dimension, atomically."""
    model = folded_copy(model).eval()
    target = Path(path)
    try:
        program = torch.onnx.export(
            model,
            (example_inputs,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=["input"],
            output_names=["output"],
            verbose=False,
        )
    except ImportError as e:
        raise ConfigError(
            f"ONNX export needs onnx and onnxscript ({e}): pip install 'energyprune[onnx]'"
        ) from e
    with atomic_path(target) as tmp:
        program.save(str(tmp))
    return target
