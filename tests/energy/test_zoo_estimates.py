"""Every built-in profile prices the zoo as it did before the runtime terms (fusion, occupancy,
per-kernel efficiency, active power) existed: those terms are off unless a profile sets them.

``data/zoo_estimates.json`` was written by this module's ``write`` at commit dae47ac, before
energy/hardware/kernel_time.py existed. Regenerate it only for a change meant to move the figures:
``python -m tests.energy.test_zoo_estimates``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from energyprune.energy.pricing.estimates import estimate
from energyprune.energy.tracing.tracer import trace
from energyprune.models.zoo import build_model

GOLDEN = Path(__file__).parent / "data" / "zoo_estimates.json"
MODELS = {"resnet20": None, "vgg16_bn": None, "digits_cnn": None,
          "mobilenet_v2": (1, 3, 224, 224), "resnet18": (1, 3, 224, 224)}  # fmt: skip
#: the profiles that existed then (later ones have no figures to keep); h100-sxm was then
#: the datasheet profile, kept as h100-sxm-datasheet when h100-sxm was calibrated (issue 36)
PROFILES = ("a100-sxm", "eyeriss-65nm", "gpu-generic", "h100-sxm-datasheet", "h100-sxm-2of4",
            "horowitz-45nm")  # fmt: skip


def _figures(spec: str) -> dict[str, dict]:
    built = build_model(spec)
    torch.manual_seed(0)
    with torch.no_grad():
        tr = trace(built.model.eval(), torch.randn(*(MODELS[spec] or built.input_shape)))
    out = {}
    for hw in PROFILES:
        for dtype in (None, "int8"):
            p = estimate(tr, hw, dtype)
            out[f"{spec}/{hw}/{dtype}"] = {
                "energy_j": p.total.energy_j,
                "seconds": p.total.seconds,
                "static_j": p.total.static_j,
                "layers": [layer.energy_j for layer in p.layers],
            }
    return out


@pytest.mark.parametrize("spec", list(MODELS))
def test_existing_profiles_price_the_zoo_as_before(spec):
    golden = json.loads(GOLDEN.read_text())
    for key, now in _figures(spec).items():
        assert json.loads(json.dumps(now)) == golden[key], key  # identical, not close


def write() -> None:
    figures = {k: v for spec in MODELS for k, v in _figures(spec).items()}
    GOLDEN.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    write()
    sys.exit(0)
