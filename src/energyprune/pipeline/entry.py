"""``energyprune.prune``: one entry point for every kind of model.

An image model (or any ``nn.Module`` Torch-Pruning can trace) is pruned in one cut from an
example batch (:func:`energyprune.pruning.apply.prune`). A decoder-only language model (a
Hugging Face causal LM of the Llama/Qwen family) goes through the one run loop from its text
windows (:func:`energyprune.pipeline.lm_prune.prune_lm`): cut to a J/token budget in a serving
regime, distilled, checked by the perplexity guardrail, checkpointed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from energyprune.energy.lm.regimes import Regime

__all__ = ["is_decoder_lm", "prune"]


def is_decoder_lm(model: nn.Module) -> bool:
    """A Hugging Face causal LM whose decoder layers our cuts know."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    from energyprune.pruning.decoder import decoder_layers

    try:
        return bool(decoder_layers(model)) and hasattr(model, "generate")
    except Exception:  # not a layout we know: an ordinary module
        return False


def prune(
    model: nn.Module,
    inputs: Any,
    target_energy: float | None = None,
    *,
    regime: Regime | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    **settings: Any,
):
    """Prune a copy of ``model`` so its estimated energy meets ``target_energy`` of dense.

    Args:
        model: the dense model, left untouched.
        inputs: an image model's example batch (tensor, tuple or dict); a language model's
            text windows (:class:`~energyprune.pipeline.text.TextData`, e.g. from
            ``load_text("text:train.txt,test.txt", tokenizer)``).
        target_energy: fraction of the dense estimate (per forward pass; per token for LMs);
            0.5 for an image model and 0.7 for a language model when not given.
        regime: a language model's serving regime (default ``Decode(1, 1024)``).
        out / resume: a language model's run folder (checkpoints, report) and whether to
            resume the run found there.
        settings: an image model: ``spec=`` and the fields of
            :class:`~energyprune.pruning.spec.PruneSpec` (``hardware=``, ``criterion=``, ...;
            see :func:`energyprune.pruning.apply.prune`). A language model: the fields of
            :class:`~energyprune.pipeline.lm_prune.LMPruneConfig` (``hardware`` defaults to
            ``h100-sxm``, ``max_ppl_rise`` to 10 %, ``steps``, ``seed``, ...).

    Returns:
        A :class:`~energyprune.pruning.apply.PruneResult`, or for a language model an
        :class:`~energyprune.pipeline.lm_prune.LMPruneResult`.

    Raises:
        ConfigError: an unknown or bad setting, or one the model's kind does not use.
    """
    from energyprune.errors import ConfigError
    from energyprune.pipeline.text import TextData

    if not isinstance(inputs, TextData):  # an example batch: one cut (an LM's too)
        from energyprune.pruning.apply import prune as prune_once

        for name, value in (("regime", regime), ("out", out), ("resume", resume or None)):
            if value is not None:
                raise ConfigError(
                    f"{name}= belongs to a language model's run from text windows; an example "
                    "batch is cut once: drop it"
                )
        return prune_once(model, inputs, target_energy, **settings)
    from energyprune.energy.lm.regimes import Decode
    from energyprune.options import build
    from energyprune.pipeline.lm_prune import LMPruneConfig, prune_lm

    if not is_decoder_lm(model):
        raise ConfigError(
            f"text windows prune a decoder LM, and {type(model).__name__} is not one we can "
            "cut (Llama/Qwen-family causal LMs): pass an example batch to cut it once"
        )
    if target_energy is not None:
        settings["target_energy"] = target_energy
    cfg = build(LMPruneConfig, **settings)
    return prune_lm(model, inputs, regime or Decode(1, 1024), cfg, out=out, resume=resume)
