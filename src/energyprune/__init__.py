"""energyprune: prune PyTorch models to an energy budget that holds on the target hardware."""

from energyprune.energy.hardware import BUILTIN_PROFILES, HardwareProfile, load_hardware
from energyprune.energy.model import EnergyProfile, LayerEnergy, Totals, estimate, profile
from energyprune.energy.trace import Trace, trace
from energyprune.errors import ConfigError, EnergyPruneError, UnsupportedOpError, WeightsError
from energyprune.pipeline.models import build_model, load_weights

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_PROFILES",
    "ConfigError",
    "EnergyProfile",
    "EnergyPruneError",
    "HardwareProfile",
    "LayerEnergy",
    "Totals",
    "Trace",
    "UnsupportedOpError",
    "WeightsError",
    "__version__",
    "build_model",
    "estimate",
    "load_hardware",
    "load_weights",
    "profile",
    "trace",
]
