"""The shipped jetson-tx2 profile: what it says about itself (source, licence, regime, fidelity
figures from its fit), that ``profile --help`` lists it and every other built-in in one line,
and that pruning to it runs and reports its time-driven energy."""

from __future__ import annotations

import json

import pytest

from energyprune.cli import main
from energyprune.energy.hardware.profile import BUILTIN_PROFILES, builtin_summaries, load_hardware


def test_the_profile_cites_its_measurements_and_says_what_it_prices():
    hw = load_hardware("jetson-tx2")
    sources = " ".join(hw.sources)
    assert "HW-NAS-Bench" in sources and "MIT License" in sources and "datasheet" in sources
    assert "GROSS" in hw.description and "batch 1" in hw.description and "fp32" in hw.description
    assert hw.timed and hw.runtime.fuse_epilogues and hw.static_w > 0 and hw.forward_s > 0
    figures = hw.calibration
    assert figures["n_train"] + figures["n_heldout"] == 213  # the table's blocks that run
    assert figures["pairwise_agreement"] > figures["macs_pairwise_agreement"]


def test_profile_help_lists_every_builtin_with_its_one_line_summary(capsys):
    summaries = builtin_summaries()
    assert set(summaries) == set(BUILTIN_PROFILES) and all(summaries.values())
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    printed = capsys.readouterr().out
    for name, summary in summaries.items():
        assert any(name in line and summary in line for line in printed.splitlines()), name


def test_pruning_for_the_tx2_reports_time_driven_energy(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["prune", "resnet20", "--hardware", "jetson-tx2", "--target-energy", "0.7",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "static + active (time)" in printed and "estimated time" in printed
    before = json.loads((out / "profile_before.json").read_text())["total"]
    after = json.loads((out / "profile_after.json").read_text())["total"]
    assert after["energy_j"] == pytest.approx(0.7 * before["energy_j"], rel=0.02)
    assert 0 < after["static_j"] < before["static_j"]
