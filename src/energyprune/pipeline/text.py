"""Text for language models: token windows and perplexity.

``--data text:TRAIN[,EVAL]`` tokenises each file with the model's tokenizer, joins it into one
stream (as published perplexities do) and cuts it into non-overlapping windows of ``seq_len``
tokens. With one file, its last ``HELDOUT`` of windows are evaluation windows and the rest
calibrate and train: the two never overlap, and ``TextData.eval_span`` says which tokens were
evaluated. The model only ever sees batches of windows, never the whole text at once.
Perplexity is exp(mean next-token cross-entropy) over the first ``windows`` evaluation windows,
the same windows for every model compared, and the count is part of the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from energyprune.errors import ConfigError
from energyprune.files import read_text
from energyprune.models.placement import placement, to_model

__all__ = [
    "Perplexity",
    "TextData",
    "next_token_loss",
    "perplexity",
    "read_windows",
    "text_data_spec",
    "train_loader",
]

PREFIX = "text:"
#: with one file, the share of its windows (its tail) held out for evaluation
HELDOUT = 0.2


@dataclass(frozen=True)
class TextData:
    """Calibration/training windows and evaluation windows, ``(n, seq_len)`` token ids."""

    train: torch.Tensor
    eval: torch.Tensor
    seq_len: int
    train_path: str
    eval_path: str
    eval_span: str = ""  # which tokens the evaluation windows are, in words

    def batches(self, split: str, batch_size: int, limit: int | None = None) -> Iterator:
        """Batches of windows of ``split`` ("train" or "eval"), in order, the first ``limit``."""
        windows = self.train if split == "train" else self.eval
        windows = windows[:limit] if limit else windows
        for start in range(0, len(windows), batch_size):
            yield windows[start : start + batch_size]


def text_data_spec(spec: str) -> tuple[str, str]:
    """``text:TRAIN[,EVAL]`` → (train path, eval path; the train file when none is given)."""
    paths = [p.strip() for p in spec.removeprefix(PREFIX).split(",") if p.strip()]
    if not spec.startswith(PREFIX) or not 1 <= len(paths) <= 2:
        raise ConfigError(f"--data for language models is text:TRAIN[,EVAL], got {spec!r}")
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"text file {path} does not exist; check the path in --data")
    return paths[0], paths[-1]


def read_windows(path: str, tokenizer: Any, seq_len: int) -> torch.Tensor:
    """Non-overlapping windows of ``seq_len`` tokens of the whole file, ``(n, seq_len)``."""
    if seq_len < 2:
        raise ConfigError(
            f"--seq-len must be >= 2 (a window predicts its next tokens), got {seq_len}"
        )
    text = read_text(path, "text file")
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    n = len(ids) // seq_len
    if n < 1:
        raise ConfigError(
            f"{path} holds {len(ids)} tokens, fewer than one window of {seq_len}: pass a longer "
            "text or a smaller --seq-len"
        )
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def load_text(spec: str, tokenizer: Any, seq_len: int = 512) -> TextData:
    """The windows of ``text:TRAIN[,EVAL]``; one file: its tail evaluates, the rest trains."""
    train_path, eval_path = text_data_spec(spec)
    train = read_windows(train_path, tokenizer, seq_len)
    if eval_path != train_path:
        evaluation = read_windows(eval_path, tokenizer, seq_len)
        span = f"{eval_path}, tokens 0-{evaluation.numel():,}"
        return TextData(train, evaluation, seq_len, train_path, eval_path, span)
    n = len(train)
    held = max(1, round(HELDOUT * n))
    if n - held < 1:
        raise ConfigError(
            f"{train_path} holds {n} window(s) of {seq_len} tokens: one file needs at least 2 "
            "(training windows and a held-out tail); pass text:TRAIN,EVAL or a smaller --seq-len"
        )
    start = (n - held) * seq_len
    span = (
        f"{eval_path}, tokens {start:,}-{n * seq_len:,} (its last {held} windows, held out: "
        f"training and calibration use tokens 0-{start:,})"
    )
    return TextData(train[: n - held], train[n - held :], seq_len, train_path, eval_path, span)


@dataclass(frozen=True)
class Perplexity:
    """exp(mean next-token NLL) over ``windows`` windows of ``seq_len`` (``tokens`` scored)."""

    value: float
    windows: int
    seq_len: int
    tokens: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "ppl": self.value,
            "windows": self.windows,
            "seq_len": self.seq_len,
            "tokens": self.tokens,
        }


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch of windows (the model's logits, fp32)."""
    ids = to_model(ids, model)
    logits = model(input_ids=ids).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def next_token_loss(forward: nn.Module, batch: Any, teacher: nn.Module | None, cfg) -> torch.Tensor:
    """A language model's batch loss for the trainer: next-token cross-entropy, or with a
    teacher ``cfg.distill_alpha`` of T²·KL to its next-token distributions at
    ``cfg.distill_temperature`` and the rest cross-entropy (:func:`distillation_loss`)."""
    from energyprune.pipeline.recover import distillation_loss

    ids = batch[0] if isinstance(batch, (list, tuple)) else batch
    logits = forward(input_ids=ids).logits[:, :-1]
    vocab = logits.shape[-1]
    target = ids[:, 1:].reshape(-1)
    if teacher is None:
        return F.cross_entropy(logits.reshape(-1, vocab).float(), target)
    with torch.no_grad():
        soft = teacher(input_ids=ids).logits[:, :-1]
    return distillation_loss(
        logits.reshape(-1, vocab),
        soft.reshape(-1, vocab),
        target,
        cfg.distill_alpha,
        cfg.distill_temperature,
    )


def train_loader(data: TextData, batch_size: int = 1) -> torch.utils.data.DataLoader:
    """The training windows in order, ``batch_size`` at a time (the trainer cycles them)."""
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(data.train), batch_size=batch_size, shuffle=False)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    limit: int | None = None,
    batch_size: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> Perplexity:
    """Perplexity of ``model`` on the first ``limit`` windows (all when None), in eval mode."""
    windows = windows[:limit] if limit else windows
    was_training = model.training
    model.eval()
    device = placement(model).device
    total, count = 0.0, 0
    try:
        for i, start in enumerate(range(0, len(windows), batch_size)):
            ids = windows[start : start + batch_size].to(device)
            scored = ids[:, 1:].numel()
            total += float(lm_loss(model, ids)) * scored
            count += scored
            if on_batch:
                on_batch(i + 1, math.ceil(len(windows) / batch_size))
    finally:
        model.train(was_training)
    return Perplexity(math.exp(total / count), len(windows), windows.shape[1], count)
