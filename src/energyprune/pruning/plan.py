"""Pruning plans: what was removed, as JSON, and replay onto a freshly built model.

A plan — not a pickle — is how a pruned model is saved: the original architecture's recipe
(built-in name, torchvision name or ``module:factory``), the removal rounds (channel indices per
group root, in the numbering of that round) and the final widths. Replaying the rounds on a
fresh model reproduces the pruned shapes; the weights then load from safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.layers import layer_widths
from energyprune.models.placement import example_input, placement
from energyprune.pruning.hf_config import sync_config

__all__ = ["PLAN_VERSION", "PruningPlan", "removed_input_channels", "replay"]

PLAN_VERSION = 1


@dataclass
class PruningPlan:
    """What a prune did, and how to redo it.

    Attributes:
        granularity / criterion / strategy / hardware / round_to: the settings used.
        target_energy: requested fraction of the dense estimate (None when ``max_joules``).
        dense_j / target_j / achieved_j: estimated joules per forward pass (estimates).
        rounds: channel removals, one list per round of ``{"root", "removed", "members"}``.
        widths: final ``[in, out]`` channels of every conv / linear layer.
        masks: unstructured / N:M masks per weight: ``{"sparsity", "pattern", "sha256"}``.
        target_sparsity: the sparsity the unstructured threshold search settled on.
        arch: ``{"name", "source"}`` to rebuild the dense model; None for an in-memory model.
        input_shape / input_dtype: example input used to trace the model.
        precision: per-layer dtype of the deployed model where it differs from the input's
            (``{"layer1.0.conv1": "int8"}``); layers not listed stay in floating point. This is
            the mixed-precision plan of ``energyprune quantize``.
        traced_parts: when the whole model did not trace, the submodules that were traced
            and pruned inside (their outputs keep their width); None when it traced whole.
        notes: one line per decision the user should know of (e.g. a fallback granularity).
        spec: the :class:`~energyprune.pruning.spec.PruneSpec` asked for, whole (the fields
            above are what was done: ``round_to`` resolved, a fallback granularity).
    """

    granularity: str
    criterion: str
    strategy: str
    hardware: str
    round_to: int
    target_energy: float | None
    dense_j: float
    target_j: float
    achieved_j: float = 0.0
    rounds: list[list[dict[str, Any]]] = field(default_factory=list)
    widths: dict[str, list[int]] = field(default_factory=dict)
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_sparsity: float | None = None
    arch: dict[str, str] | None = None
    input_shape: list[int] = field(default_factory=list)
    input_dtype: str = "float32"
    precision: dict[str, str] = field(default_factory=dict)
    traced_parts: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningPlan:
        if data.get("version") != PLAN_VERSION:
            raise ConfigError(
                f"plan version {data.get('version')} is not supported (expected {PLAN_VERSION}); "
                "re-run the prune with this energyprune version"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def unpruned(cls, model: nn.Module, arch: str, input_shape: Sequence[int], hardware: str):
        """The plan of ``model`` saved as it is (nothing removed), e.g. before int8; its joules
        are the model's estimate under ``hardware``."""
        from energyprune.energy.pricing.estimates import profile

        dense_j = profile(model, example_input(model, input_shape), hardware).total.energy_j
        return cls(
            granularity="none",
            criterion="none",
            strategy="none",
            hardware=hardware,
            round_to=1,
            target_energy=1.0,
            dense_j=dense_j,
            target_j=dense_j,
            achieved_j=dense_j,
            arch={"name": arch},
            input_shape=list(input_shape),
        )

    def example_input(self, model: nn.Module) -> torch.Tensor:
        """An input of the traced shape on ``model``'s device (to rebuild the dependency
        graph): token ids stay integer, images take the model's floating dtype."""
        if self.input_dtype.startswith("int"):
            where = placement(model)
            dtype = getattr(torch, self.input_dtype)
            return torch.zeros(self.input_shape, dtype=dtype, device=where.device)
        return example_input(model, self.input_shape)


def removed_input_channels(plan: PruningPlan, dense: nn.Module) -> dict[str, list[int]]:
    """Input channels each layer lost, in the *dense* model's numbering (composing rounds).

    Zeroing exactly these input slices in the dense model reproduces the pruned model's
    outputs: the basis of the structural-equivalence check.
    """
    current = {n: list(range(w[0])) for n, w in layer_widths(dense).items()}
    removed: dict[str, list[int]] = {}
    for entries in plan.rounds:
        for entry in entries:
            for member in entry["members"]:
                name = member["module"]
                if "in_channels" not in member["handler"] or name not in current:
                    continue
                gone = set(member["idxs"])
                removed.setdefault(name, []).extend(current[name][i] for i in sorted(gone))
                current[name] = [c for i, c in enumerate(current[name]) if i not in gone]
    return {k: sorted(v) for k, v in removed.items()}


def replay(model: nn.Module, plan: PruningPlan, example_inputs: Any = None) -> nn.Module:
    """Apply ``plan``'s channel removals to a freshly built dense ``model`` (in place)."""
    from energyprune.pruning.groups import Structure

    example = plan.example_input(model) if example_inputs is None else example_inputs
    for entries in plan.rounds:
        structure = Structure(model, example, prune_residual=True, parts=plan.traced_parts)
        for entry in entries:
            structure.remove(entry["root"], entry["removed"])
    sync_config(model)
    got = layer_widths(model)
    wrong = {k: (got.get(k), v) for k, v in plan.widths.items() if got.get(k) != v}
    if wrong:
        name, (have, want) = next(iter(wrong.items()))
        raise ConfigError(
            f"replaying the plan gave {len(wrong)} layers of the wrong width (e.g. {name}: "
            f"{have} vs {want} in the plan): the model is not the architecture the plan was "
            "made for"
        )
    return model
