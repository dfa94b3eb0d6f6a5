"""calibrate --from: tables read by line, one fit path, a known synthetic device recovered."""

from __future__ import annotations

import csv
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import energyprune
from energyprune.cli import main
from energyprune.energy.calibration import from_table as fromfile
from energyprune.energy.calibration.from_table import calibrate_from, resolve_model
from energyprune.energy.calibration.profile_file import write_calibration
from energyprune.energy.calibration.tables import read_table
from energyprune.energy.hardware.profile import load_hardware
from energyprune.energy.measurement.meters import CounterMeter
from energyprune.energy.pricing.estimates import estimate
from energyprune.energy.tracing.tracer import trace
from energyprune.errors import ConfigError
from energyprune.models.layerspec import parse_layer
from tests.energy.test_calibrate import TRUTH  # the same synthetic device as live calibration

HEADER = ["model", "input_shape", "dtype", "joules_per_sample", "device"]


def sweep() -> list[tuple[str, tuple[int, ...]]]:
    rows = [
        (f"Conv2d({cin}, {cout}, {k}, padding={k // 2})", (bs, cin, px, px))
        for cin, cout, k, px, bs in itertools.product(
            (3, 12, 16, 30), (8, 14, 16, 24, 32), (1, 3), (8, 16), (1, 4)
        )
    ]
    rows += [
        (f"Linear({i}, {o})", (bs, i))
        for i, o, bs in itertools.product((16, 20, 32, 48, 64), (16, 24, 30, 64), (1, 8))
    ]
    return rows


def write_synthetic(path, noise: float = 0.02, repeat: int = 1) -> None:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for spec, shape in sweep() * repeat:
            with torch.no_grad():
                joules = estimate(trace(parse_layer(spec), torch.randn(*shape)), TRUTH).total
            value = joules.energy_j / shape[0] * (1 + noise * rng.standard_normal())
            writer.writerow([spec, ",".join(map(str, shape)), "fp32", value, "bench"])


def test_fit_recovers_a_known_device_and_beats_macs_on_close_pairs(tmp_path):
    table = tmp_path / "bench.csv"
    write_synthetic(table)
    result = calibrate_from(table, base="gpu-generic", energy_factor=10)  # truth: 7x below base
    rep, coef = result.report, result.profile.coefficients()
    for name, truth in [
        ("launch", 2e6),
        ("mac:unaligned", 3.0),
        ("mac:fp32", 2.0),
        ("bytes:buffer", 4.0),
        ("bytes:dram", 30.0),
    ]:
        assert coef[name] == pytest.approx(truth, rel=0.15), name
    assert rep["n_close_pairs_heldout"] > 50
    assert rep["close_pair_agreement"] > rep["macs_close_pair_agreement"]
    assert rep["close_pair_agreement"] > rep["base_close_pair_agreement"]
    assert rep["mape"] < 0.05 < rep["base_mape"]
    assert rep["quantity"] == "joules per sample" and rep["device"] == "bench"
    write_calibration(result, str(tmp_path / "fit.yaml"), None)
    fitted = load_hardware(tmp_path / "fit.yaml")  # usable wherever a profile is
    assert fitted.launch_pj == result.profile.launch_pj
    assert fitted.calibration["close_pair_agreement"] == rep["close_pair_agreement"]


def test_ten_thousand_rows_trace_each_configuration_once(tmp_path, monkeypatch):
    table = tmp_path / "big.csv"
    write_synthetic(table, repeat=50)  # 10,000 rows, 200 configurations
    calls = []
    real = fromfile.op_amounts
    monkeypatch.setattr(fromfile, "op_amounts", lambda *a: calls.append(1) or real(*a))
    result = calibrate_from(table)  # its time is a benchmark's, never a test's
    assert len(calls) == 200 and result.report["n_train"] + result.report["n_heldout"] == 10_000


BAD = [
    ["Linear(8, 4)", "2,8", "fp32", "1e-6", "d"],
    ["Linear(8, 4)", "2,9", "fp32", "1e-6", "d"],  # line 3: shape mismatch
    ["Conv2d(3, 4,", "1,3,8,8", "fp32", "1e-6", "d"],  # line 4: unparsable
    ["Linear(8, 4)", "2,8", "fp32", "0", "d"],  # line 5: non-positive
    ["Linear(8, 5)", "2,8", "fp32", "", "d"],  # line 6: missing joules
    ["Linear(8, 6)", "2,8", "fp99", "1e-6", "d"],  # line 7: unknown dtype
] + [[f"Linear(8, {n})", "2,8", "fp32", f"{n}e-7", "d"] for n in range(4, 12)]


def write_bad(path) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([HEADER, *BAD])


def test_bad_rows_are_named_by_line_and_stop_the_fit_unless_skipped(tmp_path, capsys):
    table = tmp_path / "bad.csv"
    write_bad(table)
    with pytest.raises(ConfigError) as err:
        calibrate_from(table)
    message = str(err.value)
    for line in (3, 4, 5, 6, 7):
        assert f"bad.csv line {line}:" in message
    assert "bad.csv line 2:" not in message and "--skip-bad" in message
    assert "shape [2, 9]" in message and "does not parse" in message

    out = tmp_path / "p.yaml"
    assert main(["calibrate", "--from", str(table), "--out", str(out)]) == 2
    assert not out.exists()  # nothing half-written
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback
    assert main(["calibrate", "--from", str(table), "--out", str(out), "--skip-bad"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert len(report["bad_rows"]) == 5 and report["bad_rows"][0].startswith("bad.csv line 3")
    assert report["n_train"] + report["n_heldout"] == len(BAD) - 5
    assert "fitted to those measurements" in out.read_text()


def test_jsonl_and_folders_read_like_csv(tmp_path):
    rows = [dict(zip(HEADER, r, strict=True)) for r in BAD[6:]]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n\n")
    (tmp_path / "b.json").write_text(json.dumps(rows[4:]))
    (tmp_path / "notes.txt").write_text("ignored")
    read, bad = read_table(tmp_path)
    assert bad == [] and len(read) == len(rows)
    assert read[0].where == "a.jsonl line 1" and read[-1].where == "b.json item 4"
    assert read[0].input_shape == (2, 8) and read[0].group == "d/bs2/fp32"


def test_a_json_list_shape_is_checked_like_a_text_one(tmp_path):
    table = tmp_path / "shapes.jsonl"
    base = {"model": "Linear(8, 4)", "dtype": "fp32", "latency_ms": 1.0}
    shapes = [[0, 8], [2.5, 8], "0,8", [2, 8]]
    table.write_text("\n".join(json.dumps({**base, "input_shape": s}) for s in shapes))
    rows, bad = read_table(table, column="latency_ms")
    assert [r.input_shape for r in rows] == [(2, 8)]
    assert [b.where for b in bad] == [f"shapes.jsonl line {n}" for n in (1, 2, 3)]
    assert all("malformed input shape" in b.reason for b in bad)


def test_gross_and_active_rows_are_not_mixed(tmp_path):
    table = tmp_path / "mixed.jsonl"
    base = {"model": "Linear(8, 4)", "input_shape": [1, 8], "dtype": "fp32"}
    lines = [{**base, "joules_per_sample": 1e-6, "gross_or_active": k} for k in ("gross", "active")]
    table.write_text("\n".join(json.dumps(r) for r in lines))
    with pytest.raises(ConfigError, match="mixes gross and active"):
        read_table(table)


def test_a_measure_json_output_is_a_row(tmp_path, monkeypatch):
    watts = 40.0
    meter = CounterMeter(lambda: watts * time.perf_counter(), update_period_s=0.001)
    monkeypatch.setattr("energyprune.energy.measurement.protocol.open_meter", lambda device: meter)
    out = tmp_path / "m.json"
    argv = ["measure", "Linear(16, 8)", "--input-shape", "4,16", "--device", "cpu"]
    timing = ["--seconds", "0.02", "--windows", "2", "--warmup", "0.01", "--idle", "0"]
    assert main([*argv, *timing, "--json", str(out)]) == 0
    measured = json.loads(out.read_text())
    (row,), bad = read_table(out)
    assert bad == [] and row.model == "Linear(16, 8)" and row.input_shape == (4, 16)
    assert row.value == measured["joules_per_sample"]["median"] > 0
    assert row.dtype == "fp32" and row.kind == "gross" and row.device
    (as_latency,), _ = read_table(out, column="latency_ms")
    assert as_latency.value == pytest.approx(measured["latency_ms"]["p50"] / 1000 / 4)


def test_latency_standing_in_for_a_meter_says_so_everywhere(tmp_path, capsys):
    table = tmp_path / "cpu.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "input_shape", "dtype", "latency_ms"])
        writer.writerows([f"Linear(8, {n})", "2,8", "fp32", 0.01 * n] for n in range(4, 16))
    out = tmp_path / "cpu.yaml"
    assert main(["calibrate", "--from", str(table), "--fit", "latency_ms", "--out", str(out)]) == 0
    assert "ordering of latency (stand-in for energy)" in capsys.readouterr().out
    text = out.read_text()
    assert "name: latency-standin-cpu" in text and "picoseconds" in text
    assert "a stand-in for a meter, not energy" in text and "gross" not in text
    with pytest.raises(ConfigError, match="missing joules_per_sample"):
        calibrate_from(table)  # the default column is energy, which this table does not have


def test_a_saved_pruned_folder_is_a_row_model(tmp_path):
    from energyprune.models.zoo import build_model
    from energyprune.pruning.apply import prune
    from energyprune.pruning.export import save

    dense = build_model("digits_cnn").model.eval()
    folder = save(prune(dense, torch.randn(1, 1, 8, 8), 0.5), tmp_path / "pruned", "digits_cnn")
    table = tmp_path / "t.jsonl"
    rows = [(str(folder), 2e-6), ("digits_cnn", 4e-6)] + [
        (f"Linear(64, {n})", 1e-7 * n) for n in range(4, 10)
    ]
    table.write_text(
        "\n".join(
            json.dumps(
                {
                    "model": m,
                    "input_shape": [1, 1, 8, 8] if "Linear" not in m else [1, 64],
                    "dtype": "fp32",
                    "joules_per_sample": j,
                }
            )
            for m, j in rows
        )
    )
    out = tmp_path / "p.yaml"
    assert main(["calibrate", "--from", str(table), "--out", str(out), "--heldout", "0.5"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    macs = {v["name"].split(" @ ")[0]: v["macs_per_sample"] for v in report["variants"]}
    assert macs[str(folder)] < macs["digits_cnn"]  # the pruned folder was loaded, not the dense
    with pytest.raises(ConfigError, match="is a folder"):
        calibrate_from(table)  # the energy layer's resolver names the fix instead

    def load(spec, weights):
        return energyprune.load(spec)[0] if Path(spec).is_dir() else resolve_model(spec, weights)

    assert calibrate_from(table, resolve=load, heldout_fraction=0.5).report["bad_rows"] == []
