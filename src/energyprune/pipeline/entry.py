"""``energyprune.prune``: one entry point for every kind of model.

An image model (or any ``nn.Module`` Torch-Pruning can trace) is pruned in one cut from an
example batch (:func:`energyprune.pruning.apply.prune`). A decoder-only language model (a
Hugging Face causal LM of the Llama/Qwen family) goes through the one run loop from its text
windows (:func:`energyprune.pipeline.lm_prune.prune_lm`): cut to a J/token budget in a serving
regime, distilled, checked by the perplexity guardrail, checkpointed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

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


def prune(model: nn.Module, inputs: Any, target_energy: float | None = 0.5, **options: Any):
    """Prune a copy of ``model`` so its estimated energy meets ``target_energy`` of dense.

    Args:
        model: the dense model, left untouched.
        inputs: an image model's example batch (tensor, tuple or dict); a language model's
            text windows (:class:`~energyprune.pipeline.text.TextData`, e.g. from
            ``load_text("text:train.txt,test.txt", tokenizer)``).
        target_energy: fraction of the dense estimate (per forward pass; per token for LMs).
        options: an image model: the settings of :func:`energyprune.pruning.apply.prune`
            (``spec=``, ``hardware=``, ``criterion=``, ...). A language model: ``regime=``
            (default ``Decode(1, 1024)``), ``out=`` (checkpoints; ``resume=``), ``steps=``,
            ``seed=`` and the fields of :class:`~energyprune.pipeline.lm_prune.LMPruneConfig`
            (``hardware`` defaults to ``h100-sxm``, ``max_ppl_rise`` to 10 %).

    Returns:
        A :class:`~energyprune.pruning.apply.PruneResult`, or for a language model an
        :class:`~energyprune.pipeline.lm_prune.LMPruneResult`.
    """
    from energyprune.pipeline.text import TextData

    if not isinstance(inputs, TextData):  # an example batch: one cut (an LM's too)
        from energyprune.pruning.apply import prune as prune_once

        return prune_once(model, inputs, target_energy, **options)
    from energyprune.energy.regimes import Decode
    from energyprune.errors import ConfigError
    from energyprune.pipeline.lm_prune import LMPruneConfig, prune_lm

    if not is_decoder_lm(model):
        raise ConfigError(
            f"text windows prune a decoder LM, and {type(model).__name__} is not one we can "
            "cut (Llama/Qwen-family causal LMs): pass an example batch to cut it once"
        )

    regime = options.pop("regime", Decode(1, 1024))
    run = {k: options.pop(k) for k in ("out", "resume", "steps", "seed") if k in options}
    if target_energy is not None:
        options["target_energy"] = target_energy
    return prune_lm(model, inputs, regime, LMPruneConfig(**options), **run)
