"""Pareto search: front correctness, plot, resume after a kill, two workers on one storage."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from energyprune.pipeline.search import knee, pareto_front

DIRECTIONS = ["maximize", "minimize", "minimize"]


def dominates(a, b) -> bool:
    ge = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    return ge and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=25
    )
)
def test_front_is_non_dominated_and_complete(points):
    values = [list(p) for p in points]
    flags = pareto_front(values, DIRECTIONS)
    front = [v for v, f in zip(values, flags, strict=True) if f]
    for v in front:  # nothing dominates a front point
        assert not any(dominates(o, v) for o in values)
    for v, f in zip(values, flags, strict=True):  # every other point is dominated
        if not f:
            assert any(dominates(o, v) for o in front)
    assert 0 <= knee(front, DIRECTIONS) < len(front)


def _search(out: Path, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "energyprune.cli",
        "search",
        "digits_cnn",
        "--data",
        "digits",
        "--trials",
        str(trials),
        "--out",
        str(out),
        "--pretrain-epochs",
        "3",
        "--proxy-batches",
        "4",
        "--target-range",
        "0.4:0.9",
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _complete(db: Path) -> list[int]:
    storage = f"sqlite:///{db}"
    try:
        study = optuna.load_study(study_name="energyprune", storage=storage)
    except KeyError:
        return []
    return [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def _complete_now(db: Path) -> int:
    """Completed trials, read-only: a reader that goes through optuna would create the schema
    itself, racing the search that is creating it (seen in CI: "table ... already exists")."""
    if not db.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
            return int(rows.fetchone()[0])
    except sqlite3.OperationalError:  # not made yet, or locked by a writer
        return 0


def test_search_writes_a_correct_front_and_plot(tmp_path):
    subprocess.run(_search(tmp_path, 6), check=True, env=ENV, capture_output=True)
    report = json.loads((tmp_path / "pareto.json").read_text())
    assert report["objectives"] == ["accuracy", "energy", "latency"]
    assert report["validation"] == "10% of train (seed 0)"
    assert len(report["trials"]) == 6 and report["energy_basis"].startswith("estimated")
    values = [
        [t["values"]["accuracy"], t["values"]["energy_j"], t["values"]["latency_ms"]]
        for t in report["trials"]
    ]
    assert [t["pareto"] for t in report["trials"]] == pareto_front(values, DIRECTIONS)
    assert report["knee"] in {t["number"] for t in report["trials"] if t["pareto"]}
    assert all(t["latency_noisy"] is None or "spread" in t["latency_noisy"] or "cores" in
               t["latency_noisy"] for t in report["trials"])  # fmt: skip
    assert (tmp_path / "pareto.png").stat().st_size > 5000


def test_killed_search_resumes_and_continues_its_count(tmp_path):
    db = tmp_path / "study.db"
    proc = subprocess.Popen(
        _search(tmp_path, 8), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 900  # a busy machine is slow, never wrong
    while time.time() < deadline and proc.poll() is None:
        if _complete_now(db) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    assert proc.wait() == -signal.SIGKILL, "the search finished before it could be killed"
    before = _complete(db)
    assert 3 <= len(before) < 8
    subprocess.run(_search(tmp_path, 8), check=True, env=ENV, capture_output=True)
    after = _complete(db)
    assert len(after) == 8 and set(before) < set(after)
    assert min(set(after) - set(before)) > max(before)  # numbering continued


def test_two_workers_share_one_study(tmp_path):
    db = tmp_path / "study.db"
    subprocess.run(_search(tmp_path, 1), check=True, env=ENV, capture_output=True)  # dense
    workers = [
        subprocess.Popen(
            _search(tmp_path, 7), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    study = optuna.load_study(study_name="energyprune", storage=f"sqlite:///{db}")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert len(_complete(db)) >= 7


def test_precision_dimension(trained_digits, tmp_path):
    """fp32,int8: each trial picks a precision; int8 trials are priced as int8, scored as the
    converted model, and timed compiled like the fp32 ones."""
    pytest.importorskip("torchao")
    from energyprune.energy.pricing.estimates import profile
    from energyprune.errors import ConfigError
    from energyprune.pipeline.finetune import TrainConfig
    from energyprune.pipeline.search import _scored, search

    model, data = trained_digits
    example = torch.randn(*data.input_shape)
    fp32_j = 1e-4
    scored, energy, timing = _scored(model, fp32_j, "int8", data, example, "horowitz-45nm", True)
    assert scored is not model and timing.median_ms > 0 and timing.noise.spread >= 0
    assert energy < 0.5 * profile(model, example).total.energy_j
    proxy = TrainConfig(epochs=1, lr=1e-3, optimizer="adamw", max_batches=2)
    result = search(model, data, tmp_path, trials=3, proxy=proxy, precisions=("fp32", "int8"))
    assert all(t["precision"] in ("fp32", "int8") for t in result.trials)
    assert all(t["params"]["precision"] == t["precision"] for t in result.trials)
    with pytest.raises(ConfigError, match="cannot be compared"):
        search(model, data, tmp_path / "x", precisions=("fp32", "int8"), meter_device="cuda")


def test_the_front_is_labelled_by_what_the_trials_hold():
    """The label comes from the figures read, not from the device asked for; a study holding
    measured and estimated trials is refused rather than drawn as one front."""
    from energyprune.energy.quantity import Estimated, Measured
    from energyprune.errors import ConfigError
    from energyprune.pipeline.search import _basis

    def trial(figure):
        return optuna.trial.create_trial(
            values=[figure.joules], user_attrs={"energy": figure.to_dict()}
        )

    study = optuna.create_study()
    assert _basis(study, "horowitz-45nm") == "estimated (horowitz-45nm)"
    study.add_trial(trial(Measured(1.0, "nvml", 5, 0.1)))
    assert _basis(study, "horowitz-45nm") == "measured (nvml, gross)"
    study.add_trial(trial(Estimated(2.0, "horowitz-45nm")))
    with pytest.raises(ConfigError, match="mixes energy figures"):
        _basis(study, "horowitz-45nm")


def test_finalize_replays_the_knee_trials_spec_caps_included(tmp_path):
    """--finalize prunes with the knee trial's PruneSpec, its tuned per-stage caps included:
    the final plan.json records exactly that spec."""
    from energyprune.cli import main

    args = _search(tmp_path, 3, "--finalize", "--steps", "1", "--finetune-epochs", "0")[3:]
    assert main(args) == 0
    report = json.loads((tmp_path / "pareto.json").read_text())
    knee = next(t for t in report["trials"] if t["number"] == report["knee"])
    assert knee["spec"]["layer_caps"] and knee["spec"]["target_energy"] == pytest.approx(
        knee["params"]["target_energy"]
    )
    final = json.loads((tmp_path / "final" / "plan.json").read_text())
    assert final["spec"] == knee["spec"]
