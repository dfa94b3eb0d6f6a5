"""Progress of long work wherever the output goes.

On a terminal: rich bars (steps, epoch) that vanish when done. Anywhere else (a log file, CI,
``nohup``, a cluster job) a bar prints nothing until it ends, so the same callbacks print plain
lines instead: one when a fine-tune starts, then at most one every :data:`EVERY_S` seconds, plus
one per epoch and per step, each with the stage, batch, mean loss and ETA.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console

__all__ = ["EVERY_S", "Progress", "clock_text", "status"]

EVERY_S = 10.0


def clock_text(seconds: float) -> str:
    """``75`` → ``1:15``, ``3725`` → ``1:02:05``."""
    s = max(round(seconds), 0)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """``log``, ``on_batch``, ``on_step`` and ``on_items`` callbacks for the library's long
    calls, drawn as bars on a terminal and as throttled plain lines elsewhere.

    ``stage`` names the work the batches belong to ("pre-training"); without it, batches are
    the fine-tune of the step after the last one reported done (then the final fine-tune).
    """

    def __init__(
        self,
        console: Console,
        steps: int | None = None,
        *,
        stage: str | None = None,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.steps, self.stage = console, steps, stage
        self.every_s, self.clock = every_s, clock
        self.done = 0
        self._bar = None
        self._last: float | None = None  # when the last plain line was printed
        self._epoch = (-1, 0.0, 0.0)  # (epoch, its start, its summed loss)

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich.progress import Progress as Bars

            self._bar = Bars(console=self.console, transient=True).__enter__()
            self._tasks: dict[str, int] = {}
        return self

    def _update(self, task: str, **fields) -> None:
        """Draw ``task``'s bar (made on first use: a load with no decode shows none)."""
        if task not in self._tasks:
            self._tasks[task] = self._bar.add_task(task, total=None)
        self._bar.update(self._tasks[task], **fields)

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None):
        if self._bar is not None:
            self._bar.__exit__(kind, value, tb)
            self._bar = None

    def log(self, message: str) -> None:
        """A line of the library's own (steps, decisions)."""
        if self._bar is not None:
            self._bar.console.print(message)
        else:  # a log file keeps whole lines: grep and tail see one line per event
            self.console.print(message, soft_wrap=True)

    def _stage(self) -> str:
        if self.stage is not None:
            return self.stage
        if not self.steps:
            return "fine-tune"
        if self.done < self.steps:
            return f"step {self.done + 1}/{self.steps} fine-tune"
        return "final fine-tune"

    def on_step(self, done: int, total: int) -> None:
        self.done, self.steps = done, total
        if self._bar is not None:
            self._update("steps", completed=done, total=total, description=f"step {done}/{total}")

    def on_batch(self, epoch: int, i: int, n: int, loss: float) -> None:
        self._batch(self._stage(), epoch, i, n, loss)

    def for_stage(self, stage: str) -> Callable[[int, int, int, float], None]:
        """An ``on_batch`` for work outside the steps (pre-training), labelled ``stage``."""
        return lambda epoch, i, n, loss: self._batch(stage, epoch, i, n, loss)

    def _batch(self, stage: str, epoch: int, i: int, n: int, loss: float) -> None:
        now = self.clock()
        if epoch != self._epoch[0] or i == 0:
            self._epoch = (epoch, now, 0.0)
        _, start, summed = self._epoch
        self._epoch = (epoch, start, summed + loss)
        if self._bar is not None:
            description = f"{stage} · epoch {epoch + 1} · loss {loss:.3f}"
            self._update("batches", completed=i + 1, total=n, description=description)
            return
        mean, elapsed = (summed + loss) / (i + 1), now - start  # timed from the first batch
        where = f"{stage} · epoch {epoch + 1} · batch {i + 1}/{n} · mean loss {mean:.3f}"
        if i + 1 == n:
            self._line(now, f"{where} · epoch done in {clock_text(elapsed)}")
        elif i == 0 and epoch == 0:  # a fine-tune began
            self._line(now, f"{where} · started")
        elif i > 0 and (self._last is None or now - self._last >= self.every_s):
            eta = elapsed / i * (n - i - 1)  # an epoch's first batch has no pace yet
            self._line(now, f"{where} · {clock_text(elapsed)} elapsed · ETA {clock_text(eta)}")

    def on_items(self, done: int, total: int, what: str) -> None:
        """A count of ``total`` things (images decoded, variants measured)."""
        now = self.clock()
        if self._bar is not None:
            self._update("items", completed=done, total=total, description=what)
        elif done == total or self._last is None or now - self._last >= self.every_s:
            self._line(now, f"{what}: {done}/{total}")

    def _line(self, now: float, text: str) -> None:
        self._last = now
        self.console.print(text, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def status(console: Console, message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; elsewhere the message as a line, then updates at most one per
    :data:`EVERY_S` seconds. Yields the update callback."""
    if console.is_terminal:
        with console.status(message) as spinner:
            yield lambda text: spinner.update(text)
        return
    console.print(message, highlight=False, soft_wrap=True)
    last = [time.monotonic()]

    def update(text: str) -> None:
        if time.monotonic() - last[0] >= EVERY_S:
            last[0] = time.monotonic()
            console.print(text, highlight=False, soft_wrap=True)

    yield update
