"""energyprune: prune PyTorch models to an energy budget that holds on the target hardware."""

from energyprune.deploy.quantize import (
    QuantizedModel,
    load_quantized,
    quantize_int8,
    quantize_int8_linear,
    save_quantized,
)
from energyprune.energy.calibrate import calibrate
from energyprune.energy.hardware import BUILTIN_PROFILES, HardwareProfile, load_hardware
from energyprune.energy.measure import Measurement, Protocol, measure
from energyprune.energy.meter import EnergyMeter, Meter
from energyprune.energy.model import EnergyProfile, LayerEnergy, Totals, estimate, profile
from energyprune.energy.trace import Trace, trace
from energyprune.errors import (
    ConfigError,
    EnergyPruneError,
    MeterError,
    MeterUnavailableError,
    UnsupportedOpError,
    WeightsError,
)
from energyprune.models.zoo import build_model, load_weights
from energyprune.pipeline.recover import distillation_loss, recalibrate_bn
from energyprune.pruning.apply import PruneResult, prune
from energyprune.pruning.export import export_onnx, load, save
from energyprune.pruning.plan import PruningPlan
from energyprune.pruning.spec import PruneSpec
from energyprune.reports.plots import plot_layer_energy

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_PROFILES",
    "ConfigError",
    "EnergyMeter",
    "EnergyProfile",
    "EnergyPruneError",
    "HardwareProfile",
    "LayerEnergy",
    "Measurement",
    "Meter",
    "MeterError",
    "MeterUnavailableError",
    "Protocol",
    "PruneResult",
    "PruneSpec",
    "PruningPlan",
    "QuantizedModel",
    "Totals",
    "Trace",
    "UnsupportedOpError",
    "WeightsError",
    "__version__",
    "build_model",
    "calibrate",
    "distillation_loss",
    "estimate",
    "export_onnx",
    "load",
    "load_hardware",
    "load_quantized",
    "load_weights",
    "measure",
    "plot_layer_energy",
    "profile",
    "prune",
    "quantize_int8",
    "quantize_int8_linear",
    "recalibrate_bn",
    "save",
    "save_quantized",
    "trace",
]
