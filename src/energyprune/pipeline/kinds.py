"""Which kind of model a run's data makes (a registry: a new kind adds one entry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from energyprune.errors import ConfigError
from energyprune.pipeline.config import RunConfig
from energyprune.pipeline.data import Data
from energyprune.pipeline.kind import ModelKind

__all__ = ["kind_for"]


def _image(data: Any, cfg: RunConfig, arch: str, meter: str | None) -> ModelKind:
    from energyprune.pipeline.image_kind import ImageClassifier

    return ImageClassifier(data, cfg, arch, meter)


#: data type → the kind it makes (language models are built with their regime and options:
#: :class:`~energyprune.pipeline.lm_kind.DecoderLM`, passed to the loop as the kind itself)
KINDS: dict[type, Callable[[Any, RunConfig, str, str | None], ModelKind]] = {Data: _image}


def kind_for(data: Any, cfg: RunConfig, arch: str, meter: str | None) -> ModelKind:
    """The kind for ``data``; a kind passed in place of data is used as it is."""
    if hasattr(data, "step") and hasattr(data, "guardrail"):
        return data
    for data_type, make in KINDS.items():
        if isinstance(data, data_type):
            return make(data, cfg, arch, meter)
    raise ConfigError(f"no kind of model takes {type(data).__name__} data")
