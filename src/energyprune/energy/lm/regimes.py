"""Serving regimes of a language model: what one priced token is.

Energy per token moves 6-10x with batch size alone (decode reads every weight once per step,
however many sequences share it), so an LLM figure means nothing without its regime:

* :class:`Prefill` ``(batch, prompt)``: a prompt written into the cache, J per prompt token;
* :class:`Decode` ``(batch, context)``: one token per sequence after ``context`` cached ones,
  J per generated token;
* :class:`Workload` ``(prompt, output, batch)``: a whole request, prefill included, J per output
  token, as a server's meter sees it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from energyprune.errors import ConfigError

__all__ = [
    "PHASES",
    "Decode",
    "Pass",
    "Prefill",
    "Regime",
    "Workload",
    "parse_regime",
    "parse_workload",
    "touched_experts",
]


@dataclass(frozen=True)
class Pass:
    """One forward pass a regime runs ``count`` times: a prefill of ``length`` prompt tokens
    or a decode step with ``length`` cached tokens, for ``batch`` sequences."""

    phase: str
    batch: int
    length: int
    count: float = 1.0


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Prefill:
    """``batch`` prompts of ``prompt`` tokens each; priced per prompt token."""

    batch: int = 1
    prompt: int = 1024
    phase: str = "prefill"
    basis: str = "prompt token"

    def __post_init__(self) -> None:
        _positive(batch=self.batch, prompt=self.prompt)

    @property
    def tokens(self) -> int:
        """Tokens one run of the regime prices (what J/token divides by)."""
        return self.batch * self.prompt

    def passes(self, windows: Sequence[int] = ()) -> tuple[Pass, ...]:
        return (Pass("prefill", self.batch, self.prompt),)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decode:
    """One generated token for each of ``batch`` sequences holding ``context`` cached tokens;
    priced per generated token."""

    batch: int = 1
    context: int = 1024
    phase: str = "decode"
    basis: str = "generated token"

    def __post_init__(self) -> None:
        _positive(batch=self.batch, context=self.context)

    @property
    def tokens(self) -> int:
        return self.batch

    def passes(self, windows: Sequence[int] = ()) -> tuple[Pass, ...]:
        return (Pass("decode", self.batch, self.context),)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """``batch`` requests of ``prompt`` tokens in and ``output`` tokens out, priced per output
    token with the prefill included.

    The prefill's logits give the first output token, so the other ``output - 1`` tokens take
    one decode step each: step s (s = 1 .. output-1) holds ``prompt + s - 1`` cached tokens. A
    request of one output token is exactly one prefill. Every op's FLOPs and bytes are affine in
    the context, except in a sliding-window layer, which stops growing at its window. So the
    steps are cut at each window into runs over which everything is affine, and each run costs
    exactly its length times the step at its mean context (the mean of the two whole contexts
    around it). The roofline's max() is convex, so time, and static energy with it, is a slight
    underestimate where an op crosses from compute- to memory-bound within a run.
    """

    prompt: int = 512
    output: int = 256
    batch: int = 1
    phase: str = "workload"
    basis: str = "output token"

    def __post_init__(self) -> None:
        _positive(prompt=self.prompt, output=self.output, batch=self.batch)

    def decode_runs(self, windows: Sequence[int] = ()) -> tuple[tuple[int, int], ...]:
        """(first, last) cached contexts of the decode steps, cut where a sliding window of
        ``windows`` stops growing (a step with ``c`` cached tokens attends to min(c + 1, W))."""
        first, last = self.prompt, self.prompt + self.output - 2
        if last < first:
            return ()
        cuts = sorted({w - 1 for w in windows if first <= w - 1 < last})
        starts = [first, *(c + 1 for c in cuts)]
        ends = [*cuts, last]
        return tuple(zip(starts, ends, strict=True))

    @property
    def tokens(self) -> int:
        return self.batch * self.output

    def passes(self, windows: Sequence[int] = ()) -> tuple[Pass, ...]:
        steps = []
        for first, last in self.decode_runs(windows):
            mean, n = (first + last) / 2, last - first + 1
            contexts = sorted({math.floor(mean), math.ceil(mean)})
            steps += [Pass("decode", self.batch, c, n / len(contexts)) for c in contexts]
        return (Pass("prefill", self.batch, self.prompt), *steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Regime = Prefill | Decode | Workload
#: phase name → regime class (CLI flags, JSON and measurement tables name regimes by phase)
PHASES: dict[str, type[Prefill] | type[Decode] | type[Workload]] = {
    "prefill": Prefill,
    "decode": Decode,
    "workload": Workload,
}


def parse_workload(text: str) -> Workload:
    """``"prompt=512,output=256,batch=64"`` → :class:`Workload` (``batch`` defaults to 1)."""
    fields: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("prompt", "output", "batch"):
            raise ConfigError(
                f"--workload takes prompt=S,output=N[,batch=B], got {part!r} in {text!r}"
            )
        try:
            fields[key] = int(value)
        except ValueError:
            raise ConfigError(f"--workload {key} must be a whole number, got {value!r}") from None
    missing = [k for k in ("prompt", "output") if k not in fields]
    if missing:
        raise ConfigError(f"--workload needs {' and '.join(missing)}: e.g. prompt=512,output=256")
    return Workload(**fields)


def parse_regime(text: str) -> Regime:
    """``"decode:batch=1,context=1024"``, ``"prefill:batch=4,prompt=512"`` or
    ``"workload:prompt=512,output=256,batch=8"`` → the regime (``batch`` defaults to 1)."""
    phase, _, rest = text.partition(":")
    phase = phase.strip()
    if phase not in PHASES:
        raise ConfigError(
            f"--regime starts with {', '.join(PHASES)}, got {text!r} "
            "(e.g. decode:batch=1,context=1024)"
        )
    fields: dict[str, int] = {}
    names = {f.name for f in dataclasses.fields(PHASES[phase])} - {"phase", "basis"}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in names:
            raise ConfigError(
                f"--regime {phase} takes {', '.join(sorted(names))}, got {part!r} in {text!r}"
            )
        try:
            fields[key.strip()] = int(value)
        except ValueError:
            raise ConfigError(f"--regime {key} must be a whole number, got {value!r}") from None
    return PHASES[phase](**fields)


def touched_experts(experts: int, top_k: int, tokens: int) -> float:
    """Experts a step is expected to read, of ``experts``, when each of ``tokens`` tokens routes
    to ``top_k`` distinct experts, uniformly and independently: E (1 - (1 - k/E)^T).

    Decode at batch 1 reads k experts' weights; a large batch reads nearly all of them. Real
    routers are not uniform (some experts are hot), which makes fewer experts touched: this
    is the upper end for a balanced router, the one load-balancing losses train towards."""
    if experts < 1 or not 1 <= top_k <= experts or tokens < 1:
        raise ConfigError(
            f"need 1 <= top_k <= experts and tokens >= 1, got experts={experts}, "
            f"top_k={top_k}, tokens={tokens}"
        )
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)
