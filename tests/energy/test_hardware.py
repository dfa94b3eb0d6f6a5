"""Hardware profiles: built-ins load and cite sources; user files; clear errors."""

from __future__ import annotations

import pytest

from energyprune.energy.hardware.profile import BUILTIN_PROFILES, load_hardware
from energyprune.errors import ConfigError


def test_builtins_load_and_cite_sources():
    assert {"horowitz-45nm", "eyeriss-65nm", "gpu-generic"} <= set(BUILTIN_PROFILES)
    for name in BUILTIN_PROFILES:
        hw = load_hardware(name)
        assert hw.name == name and hw.sources
        assert {"fp32", "fp16", "bf16", "int8"} <= set(hw.compute_pj)


def test_horowitz_values_follow_the_paper():
    hw = load_hardware("horowitz-45nm")
    assert hw.compute_pj["fp32"] == pytest.approx({"mac": 3.7 + 0.9, "add": 0.9})
    assert hw.compute_pj["int8"]["mac"] == pytest.approx(0.2 + 0.1)
    assert hw.memory_pj_per_byte["dram"] == pytest.approx(1950 / 8)
    assert not hw.zero_skipping


def test_eyeriss_relative_costs():
    hw = load_hardware("eyeriss-65nm")
    per_access = {k: v * 2 for k, v in hw.memory_pj_per_byte.items()}  # 16-bit accesses
    assert per_access == {"register_file": 1, "array": 2, "buffer": 6, "dram": 200}
    assert hw.zero_skipping


def test_user_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nsources: [me]\ncompute_pj: {fp32: {mac: 1, add: 0.1}}\n"
        "memory_pj_per_byte: {buffer: 1, dram: 10}\nbuffer_bytes: 1024\n"
    )
    hw = load_hardware(path)
    assert hw.name == "mine" and hw.channel_multiple == 1
    assert hw.compute_costs("fp64") == {"mac": 1.0, "add": 0.1}
    with pytest.raises(ConfigError, match="no compute cost for dtype fp16"):
        hw.compute_costs("fp16")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", "lacks"),
        ("[1, 2]", "mapping"),
        ("name: x\nsources: []\ncompute_pj: {}\nmemory_pj_per_byte: {}\nbuffer_bytes: 1", "cite"),
        (
            "name: x\nsources: [s]\ncompute_pj: {fp32: {mac: -1, add: 0}}\n"
            "memory_pj_per_byte: {buffer: 1, dram: 2}\nbuffer_bytes: 1",
            ">= 0",
        ),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_hardware(path)


def test_missing_profile_names_builtins():
    with pytest.raises(ConfigError, match="horowitz-45nm"):
        load_hardware("no-such-profile.yaml")
