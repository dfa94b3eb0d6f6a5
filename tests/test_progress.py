"""Progress off a terminal: plain lines, throttled, one per epoch, each naming stage/batch/loss."""

from __future__ import annotations

import io
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from energyprune.cli.progress import Progress, clock_text


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _plain(steps: int | None = None, **kwargs) -> tuple[Progress, io.StringIO, Clock]:
    sink, clock = io.StringIO(), Clock()
    console = Console(file=sink, force_terminal=False, width=200)
    return Progress(console, steps, clock=clock, **kwargs), sink, clock


@settings(max_examples=40, deadline=None)
@given(
    epochs=st.integers(1, 3),
    batches=st.integers(1, 60),
    seconds=st.floats(0.01, 20.0),  # batches slower than every_s too (a busy machine)
)
def test_lines_are_throttled_and_every_epoch_ends_with_one(epochs, batches, seconds):
    progress, sink, clock = _plain(2, every_s=10.0)
    printed_at = []
    with progress:
        for epoch in range(epochs):
            for i in range(batches):
                clock.now += seconds
                before = sink.getvalue().count("\n")
                progress.on_batch(epoch, i, batches, 0.5)
                if sink.getvalue().count("\n") > before:
                    printed_at.append((clock.now, i + 1 == batches))
    lines = sink.getvalue().splitlines()
    assert sum("epoch done" in line for line in lines) == epochs
    # a line that is not an epoch's last comes at least every_s after the line before it
    for (before, _), (at, epoch_end) in itertools.pairwise(printed_at):
        assert epoch_end or at - before >= 10.0
    assert printed_at[0][0] == seconds  # the first batch always shows
    assert all(line.startswith("step 1/2 fine-tune · epoch ") for line in lines)
    assert batches == 1 or lines[0].endswith("· started")
    for line in lines:  # constant batch time: ETA = that time × batches left
        if "ETA" in line:
            done = int(line.split("batch ")[1].split("/")[0])
            minutes, secs = line.rsplit("ETA ", 1)[1].split(":")
            assert abs(60 * int(minutes) + int(secs) - seconds * (batches - done)) <= 1


def test_a_batch_line_names_stage_batch_mean_loss_and_eta():
    progress, sink, clock = _plain(3)
    with progress:
        for i, loss in enumerate([1.0, 3.0]):
            clock.now += 15.0
            progress.on_batch(0, i, 10, loss)
        progress.on_step(1, 3)
        clock.now += 1
        progress.on_batch(0, 0, 10, 0.2)
        progress.on_step(3, 3)
        progress.on_batch(0, 9, 10, 0.2)
    lines = sink.getvalue().splitlines()
    assert lines[0] == "step 1/3 fine-tune · epoch 1 · batch 1/10 · mean loss 1.000 · started"
    assert (
        lines[1]
        == "step 1/3 fine-tune · epoch 1 · batch 2/10 · mean loss 2.000 · 0:15 elapsed · ETA 2:00"
    )
    assert lines[2].startswith("step 2/3 fine-tune · epoch 1 · batch 1/10")
    assert (
        lines[3].startswith("final fine-tune · epoch 1 · batch 10/10") and "epoch done" in lines[3]
    )


def test_stages_outside_the_steps_and_item_counts():
    progress, sink, clock = _plain(3)
    with progress:
        progress.for_stage("pre-training")(0, 0, 5, 1.0)
        clock.now += 20
        progress.on_batch(0, 0, 5, 1.0)
        for done in range(1, 101):
            clock.now += 0.5
            progress.on_items(done, 100, "decoding images")
    lines = sink.getvalue().splitlines()
    assert lines[0].startswith("pre-training · epoch 1 · batch 1/5")
    assert lines[1].startswith("step 1/3 fine-tune")  # the label was only for that callback
    decoded = [line for line in lines if line.startswith("decoding images")]
    assert decoded[-1] == "decoding images: 100/100" and 2 <= len(decoded) <= 7


def test_a_terminal_gets_bars_not_lines():
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=120)
    with Progress(console, 2) as progress:
        progress.on_batch(0, 0, 5, 1.0)
        progress.on_step(1, 2)
        progress.log("a decision")
    text = sink.getvalue()
    assert "a decision" in text and "mean loss" not in text


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.6, 75, 3725)] == ["0:00", "1:00", "1:15", "1:02:05"]
