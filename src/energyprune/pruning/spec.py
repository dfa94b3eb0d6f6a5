"""``PruneSpec``: everything a prune needs, in one frozen value that is validated once, passed
whole (``prune``, the run loop's steps, search trials), stored in ``plan.json`` and replayed by
``search --finalize``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.errors import ConfigError

__all__ = ["CRITERION_NAMES", "GRANULARITIES", "STRATEGY_NAMES", "PruneSpec"]

GRANULARITIES = ("channel", "nm", "unstructured")
# names only, so that a spec (and the CLI's --help) is made without Torch-Pruning; the
# registries (importance.CRITERIA, allocate.STRATEGIES) are tested to hold exactly these
CRITERION_NAMES = ("l1", "l2", "energy", "taylor", "bn_scale", "random")
STRATEGY_NAMES = ("global", "layerwise-energy")
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class PruneSpec:
    """What to prune and how (see :func:`energyprune.prune` for each setting).

    ``layer_caps`` is a tuple of ``(module-name prefix, cap)`` pairs (a mapping is accepted and
    frozen); ``ignored_layers`` holds selectors (names, ``"re:<regex>"``, modules or types).
    """

    target_energy: float | None = 0.5
    max_joules: float | None = None
    granularity: str = "channel"
    criterion: str = "energy"
    strategy: str = "global"
    hardware: str | os.PathLike[str] | HardwareProfile = "horowitz-45nm"
    dtype: str | None = None
    round_to: int | None = None
    max_layer_ratio: float = 0.9
    layer_caps: tuple[tuple[str, float], ...] = ()
    ignored_layers: tuple[Any, ...] = ()
    prune_residual: bool = False
    nm: tuple[int, int] = (2, 4)
    sparsity_scope: str = "global"

    def __post_init__(self) -> None:
        caps = self.layer_caps
        caps = tuple(caps.items()) if isinstance(caps, Mapping) else tuple(map(tuple, caps))
        object.__setattr__(self, "layer_caps", caps)
        object.__setattr__(self, "ignored_layers", tuple(self.ignored_layers))
        object.__setattr__(self, "nm", tuple(self.nm))
        for problem in self._problems():
            raise ConfigError(problem)

    def _problems(self):
        """Each bad setting as a one-line message with the fix (the first one is raised)."""
        if (self.target_energy is None) == (self.max_joules is None):
            yield "give exactly one of target_energy (fraction of dense) or max_joules"
        if self.target_energy is not None and not 0 < self.target_energy <= 1:
            yield f"target_energy must be in (0, 1], got {self.target_energy}"
        if self.max_joules is not None and self.max_joules <= 0:
            yield f"max_joules must be > 0, got {self.max_joules}"
        for name, value, allowed in (
            ("granularity", self.granularity, GRANULARITIES),
            ("criterion", self.criterion, CRITERION_NAMES),
            ("strategy", self.strategy, STRATEGY_NAMES),
            ("sparsity_scope", self.sparsity_scope, SCOPES),
        ):
            if value not in allowed:
                yield f"{name} must be one of {', '.join(allowed)}, got '{value}'"
        if not 0 < self.max_layer_ratio <= 1:
            yield f"max_layer_ratio must be in (0, 1], got {self.max_layer_ratio}"
        if any(not 0 <= cap <= 1 for _, cap in self.layer_caps):
            yield f"layer_caps values must be in [0, 1], got {dict(self.layer_caps)}"
        if self.round_to is not None and self.round_to < 1:
            yield f"round_to must be >= 1, got {self.round_to}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a profile object is stored by name, selectors that are not names by
        their type's name."""
        data = asdict(self)
        hw = self.hardware
        data["hardware"] = hw.name if isinstance(hw, HardwareProfile) else os.fspath(hw)
        data["layer_caps"] = [list(pair) for pair in self.layer_caps]
        data["ignored_layers"] = [_selector_name(s) for s in self.ignored_layers]
        data["nm"] = list(self.nm)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _selector_name(selector: Any) -> str:
    if isinstance(selector, str):
        return selector
    if isinstance(selector, type):
        return selector.__name__
    return type(selector).__name__
