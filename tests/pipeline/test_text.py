"""One text file for a language model: its tail evaluates, the rest calibrates and trains, and
the two never share a token (issue 37)."""

from __future__ import annotations

import pytest

from energyprune.errors import ConfigError
from energyprune.pipeline.text import HELDOUT, load_text
from tests.tiny_lms import CharTokenizer


def test_one_file_evaluates_only_its_held_out_tail(tmp_path):
    text = tmp_path / "one.txt"
    text.write_text("".join(chr(97 + i % 26) for i in range(20 * 8)))  # 20 windows of 8
    data = load_text(f"text:{text}", CharTokenizer(), seq_len=8)
    held = round(HELDOUT * 20)
    assert (len(data.train), len(data.eval)) == (20 - held, held)
    ids = CharTokenizer()(text.read_text())["input_ids"]
    assert data.eval.flatten().tolist() == ids[(20 - held) * 8 :]  # the last windows, in order
    assert data.train.flatten().tolist() == ids[: (20 - held) * 8]
    assert "tokens 128-160" in data.eval_span and "held out" in data.eval_span
    train_batches = [b for b in data.batches("train", 3)]
    assert sum(len(b) for b in train_batches) == 20 - held  # calibration and training windows


def test_two_files_keep_their_roles_and_one_window_cannot_be_split(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("abcdefgh" * 3)
    b.write_text("hgfedcba" * 2)
    data = load_text(f"text:{a},{b}", CharTokenizer(), seq_len=8)
    assert (len(data.train), len(data.eval)) == (3, 2) and data.eval_span.startswith(str(b))
    b.write_text("abcdefgh")
    with pytest.raises(ConfigError, match="one file needs at least 2"):
        load_text(f"text:{b}", CharTokenizer(), seq_len=8)
