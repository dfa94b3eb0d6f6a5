"""energyprune: prune PyTorch models to an energy budget that holds on the target hardware.

The public API is imported on first use (PEP 562), so ``import energyprune`` and the CLI's
``--help`` do not pay for Torch-Pruning, SciPy or torchao until a call needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from energyprune.deploy.quantize import (
        QuantizedModel,
        load_quantized,
        quantize_int8,
        quantize_int8_linear,
        save_quantized,
    )
    from energyprune.energy.calibration.live import calibrate
    from energyprune.energy.hardware.profile import BUILTIN_PROFILES, HardwareProfile, load_hardware
    from energyprune.energy.lm.per_token import LMProfile, profile_lm
    from energyprune.energy.lm.regimes import Decode, Prefill, Workload
    from energyprune.energy.measurement.lm_decode import LMMeasurement, LMSetting, measure_lm
    from energyprune.energy.measurement.meters import EnergyMeter, Meter
    from energyprune.energy.measurement.protocol import (
        Measurement,
        MeasurementProtocol,
        Protocol,
        measure,
    )
    from energyprune.energy.pricing.estimates import (
        EnergyProfile,
        LayerEnergy,
        Totals,
        estimate,
        profile,
    )
    from energyprune.energy.tracing.tracer import Trace, trace
    from energyprune.errors import (
        ConfigError,
        EnergyPruneError,
        MeterError,
        MeterUnavailableError,
        UnsupportedOpError,
        WeightsError,
    )
    from energyprune.models.zoo import build_model, load_weights
    from energyprune.pipeline.entry import prune
    from energyprune.pipeline.recover import distillation_loss, recalibrate_bn
    from energyprune.pruning.apply import PruneResult
    from energyprune.pruning.export import export_onnx, load, save
    from energyprune.pruning.gguf_export import GGUFSummary, write_gguf
    from energyprune.pruning.lm_export import load_lm, save_lm
    from energyprune.pruning.plan import PruningPlan
    from energyprune.pruning.spec import PruneSpec
    from energyprune.reports.plots import plot_layer_energy

__version__ = "0.1.0"

#: public name → the module that defines it
_EXPORTS = {
    "QuantizedModel": "energyprune.deploy.quantize",
    "load_quantized": "energyprune.deploy.quantize",
    "quantize_int8": "energyprune.deploy.quantize",
    "quantize_int8_linear": "energyprune.deploy.quantize",
    "save_quantized": "energyprune.deploy.quantize",
    "calibrate": "energyprune.energy.calibration.live",
    "BUILTIN_PROFILES": "energyprune.energy.hardware.profile",
    "HardwareProfile": "energyprune.energy.hardware.profile",
    "load_hardware": "energyprune.energy.hardware.profile",
    "LMProfile": "energyprune.energy.lm.per_token",
    "profile_lm": "energyprune.energy.lm.per_token",
    "Decode": "energyprune.energy.lm.regimes",
    "Prefill": "energyprune.energy.lm.regimes",
    "Workload": "energyprune.energy.lm.regimes",
    "Measurement": "energyprune.energy.measurement.protocol",
    "Protocol": "energyprune.energy.measurement.protocol",
    "MeasurementProtocol": "energyprune.energy.measurement.protocol",
    "measure": "energyprune.energy.measurement.protocol",
    "LMMeasurement": "energyprune.energy.measurement.lm_decode",
    "LMSetting": "energyprune.energy.measurement.lm_decode",
    "measure_lm": "energyprune.energy.measurement.lm_decode",
    "EnergyMeter": "energyprune.energy.measurement.meters",
    "Meter": "energyprune.energy.measurement.meters",
    "EnergyProfile": "energyprune.energy.pricing.estimates",
    "LayerEnergy": "energyprune.energy.pricing.estimates",
    "Totals": "energyprune.energy.pricing.estimates",
    "estimate": "energyprune.energy.pricing.estimates",
    "profile": "energyprune.energy.pricing.estimates",
    "Trace": "energyprune.energy.tracing.tracer",
    "trace": "energyprune.energy.tracing.tracer",
    "ConfigError": "energyprune.errors",
    "EnergyPruneError": "energyprune.errors",
    "MeterError": "energyprune.errors",
    "MeterUnavailableError": "energyprune.errors",
    "UnsupportedOpError": "energyprune.errors",
    "WeightsError": "energyprune.errors",
    "build_model": "energyprune.models.zoo",
    "load_weights": "energyprune.models.zoo",
    "distillation_loss": "energyprune.pipeline.recover",
    "recalibrate_bn": "energyprune.pipeline.recover",
    "PruneResult": "energyprune.pruning.apply",
    "prune": "energyprune.pipeline.entry",
    "export_onnx": "energyprune.pruning.export",
    "load": "energyprune.pruning.export",
    "GGUFSummary": "energyprune.pruning.gguf_export",
    "write_gguf": "energyprune.pruning.gguf_export",
    "load_lm": "energyprune.pruning.lm_export",
    "save_lm": "energyprune.pruning.lm_export",
    "save": "energyprune.pruning.export",
    "PruningPlan": "energyprune.pruning.plan",
    "PruneSpec": "energyprune.pruning.spec",
    "plot_layer_energy": "energyprune.reports.plots",
}

__all__ = [
    "BUILTIN_PROFILES",
    "ConfigError",
    "Decode",
    "EnergyMeter",
    "EnergyProfile",
    "EnergyPruneError",
    "GGUFSummary",
    "HardwareProfile",
    "LMMeasurement",
    "LMProfile",
    "LMSetting",
    "LayerEnergy",
    "Measurement",
    "MeasurementProtocol",
    "Meter",
    "MeterError",
    "MeterUnavailableError",
    "Prefill",
    "Protocol",
    "PruneResult",
    "PruneSpec",
    "PruningPlan",
    "QuantizedModel",
    "Totals",
    "Trace",
    "UnsupportedOpError",
    "WeightsError",
    "Workload",
    "__version__",
    "build_model",
    "calibrate",
    "distillation_loss",
    "estimate",
    "export_onnx",
    "load",
    "load_hardware",
    "load_lm",
    "load_quantized",
    "load_weights",
    "measure",
    "measure_lm",
    "plot_layer_energy",
    "profile",
    "profile_lm",
    "prune",
    "quantize_int8",
    "quantize_int8_linear",
    "recalibrate_bn",
    "save",
    "save_lm",
    "save_quantized",
    "trace",
    "write_gguf",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'energyprune' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return __all__
