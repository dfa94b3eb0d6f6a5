"""One error family for everything a user can fix; the CLI maps it to one line and exit code 2."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EnergyPruneError",
    "UnsupportedOpError",
    "WeightsError",
]


class EnergyPruneError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(EnergyPruneError, ValueError):
    """A parameter, model name, file or profile given by the user is not usable."""


class WeightsError(EnergyPruneError):
    """A weights file is missing, unreadable or belongs to another architecture."""


class UnsupportedOpError(EnergyPruneError):
    """An operator formula registration is malformed or duplicated."""
