"""One error family for everything a user can fix; the CLI maps it to one line and exit code 2."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EnergyPruneError",
    "MeterError",
    "MeterUnavailableError",
    "UnsupportedOpError",
    "WeightsError",
    "first_line",
]


class EnergyPruneError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(EnergyPruneError, ValueError):
    """A parameter, model name, file or profile given by the user is not usable."""


class WeightsError(EnergyPruneError):
    """A weights file is missing, unreadable or belongs to another architecture."""


class UnsupportedOpError(EnergyPruneError):
    """An operator formula registration is malformed or duplicated."""


class MeterUnavailableError(EnergyPruneError):
    """No energy meter can be read on this device (absent, unsupported, or no permission)."""


class MeterError(EnergyPruneError):
    """A meter failed or returned an impossible reading (0 J window, counter went backwards)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for
    one-line errors that quote what PyTorch said."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
