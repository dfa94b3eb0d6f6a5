"""Energy: trace a forward pass, price it under a hardware profile (estimates)."""

from energyprune.energy.hardware import BUILTIN_PROFILES, HardwareProfile, load_hardware
from energyprune.energy.model import EnergyProfile, LayerEnergy, Totals, estimate, profile
from energyprune.energy.trace import OpRecord, Trace, trace

__all__ = [
    "BUILTIN_PROFILES",
    "EnergyProfile",
    "HardwareProfile",
    "LayerEnergy",
    "OpRecord",
    "Totals",
    "Trace",
    "estimate",
    "load_hardware",
    "profile",
    "trace",
]
