"""Energy figures as two types, so a label cannot be wrong: an :class:`Estimated` figure (energy
model, hardware profile, calibration source) and a :class:`Measured` one (meter, windows, spread,
gross or idle-subtracted). Ratios and sums are allowed between like figures only; mixing a
measurement with an estimate raises ``TypeError`` instead of printing a number under one label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Energy", "Estimated", "Measured", "energy_from_dict"]


class _Figure:
    """Arithmetic between like figures only (``_like``); the result of a subtraction keeps the
    type (``_minus``)."""

    joules: float
    kind: str
    label: str

    def _like(self, other: object) -> bool:
        raise NotImplementedError

    def _minus(self, other: _Figure) -> _Figure:
        raise NotImplementedError

    def __truediv__(self, other: object) -> float:
        if not self._like(other):
            raise TypeError(_mixed(self, other, "divide"))
        return self.joules / other.joules  # type: ignore[attr-defined]

    def __sub__(self, other: object) -> _Figure:
        if not self._like(other):
            raise TypeError(_mixed(self, other, "subtract"))
        return self._minus(other)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class Estimated(_Figure):
    """Joules from the energy model under hardware profile ``profile``; ``calibration`` says
    where its coefficients come from (a built-in profile or a fitted YAML's path)."""

    joules: float
    profile: str
    calibration: str = "built-in"

    kind = "estimated"

    @property
    def label(self) -> str:
        return f"estimated ({self.profile})"

    def _like(self, other: object) -> bool:
        return isinstance(other, Estimated) and other.profile == self.profile

    def _minus(self, other: Estimated) -> Estimated:  # type: ignore[override]
        return Estimated(self.joules - other.joules, self.profile, self.calibration)

    def scaled(self, factor: float) -> Estimated:
        """The same estimate for ``factor`` times the work (e.g. per sample → per batch)."""
        return Estimated(self.joules * factor, self.profile, self.calibration)


@dataclass(frozen=True)
class Measured(_Figure):
    """Joules read from ``meter`` over ``windows`` windows: the median, with the interquartile
    ``spread``; ``basis`` is ``gross`` (what the meter read) or ``active`` (idle subtracted)."""

    joules: float
    meter: str
    windows: int
    spread: float
    basis: str = "gross"

    kind = "measured"

    @property
    def label(self) -> str:
        return f"measured ({self.meter}, {self.basis})"

    def _like(self, other: object) -> bool:
        return isinstance(other, Measured) and other.basis == self.basis

    def _minus(self, other: Measured) -> Measured:  # type: ignore[override]
        windows = min(self.windows, other.windows)
        spread = self.spread + other.spread
        return Measured(self.joules - other.joules, self.meter, windows, spread, self.basis)

    def scaled(self, factor: float) -> Measured:
        return Measured(
            self.joules * factor, self.meter, self.windows, self.spread * factor, self.basis
        )


Energy = Estimated | Measured


def _mixed(a: object, b: object, verb: str) -> str:
    def name(x: object) -> str:
        return getattr(x, "label", type(x).__name__)

    return f"cannot {verb} {name(a)} and {name(b)}: compare like with like"


def energy_from_dict(data: dict[str, Any]) -> Energy:
    """The figure that :meth:`Estimated.to_dict` or :meth:`Measured.to_dict` wrote."""
    fields = {k: v for k, v in data.items() if k != "kind"}
    if data.get("kind") == "measured":
        return Measured(**fields)
    if data.get("kind") == "estimated":
        return Estimated(**fields)
    raise ValueError(f"not an energy figure (kind {data.get('kind')!r}): {data}")
