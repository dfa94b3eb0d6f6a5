"""A GPU profile never implies a power its board cannot draw: per-token energy over per-token
device time lies between the board's idle power and its TDP, in decode at batch 1, 8 and 512
(issue 36). The configs are public dimensions (benchmarks/configs/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.lm.per_token import profile_lm
from energyprune.energy.lm.regimes import Decode

CONFIGS = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"


def _check(hardware: str, config: str) -> None:
    hw = load_hardware(hardware)
    for batch in (1, 8, 512):
        lm = profile_lm(f"hf:{CONFIGS / config}", Decode(batch, 1024), hw)
        watts = lm.energy_j / lm.seconds
        assert hw.power.idle_w <= watts <= hw.power.max_w, (batch, watts)


#: the 70B is served over 4 GPUs: benchmarks/llm_energy.py prices it so and reports its power
#: per GPU (docs/benchmarks.md); one GPU's worth of it would add 12 s here
SERVED_ON_ONE = sorted(p.name for p in CONFIGS.glob("*.json") if p.name != "llama-3.1-70b.json")


@pytest.mark.parametrize("config", SERVED_ON_ONE)
def test_the_calibrated_h100_implies_a_power_its_board_can_draw(config):
    """Every benchmark config served on one GPU, on h100-sxm (the profile with busy power)."""
    _check("h100-sxm", config)


@pytest.mark.parametrize("hardware", ["h100-sxm-datasheet", "a100-sxm"])
@pytest.mark.parametrize("config", ["smollm2-135m.json", "llama-3.1-8b.json"])
def test_implied_power_per_gpu_lies_between_idle_and_tdp(hardware, config):
    _check(hardware, config)
