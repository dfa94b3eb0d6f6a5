"""Every `prune` option, given a value other than its default, either changes what the run is
asked to do for that kind of model or exits 2 with one line: no flag is silently ignored.

The run itself is replaced by a stand-in that records what it was given (settings, kind
options, data, keyword arguments) and stops, so the test reads the CLI's decisions only.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("transformers")

from energyprune.cli import build_parser, main
from energyprune.models import lms
from energyprune.pipeline.recover import state_digest
from tests.tiny_lms import CharTokenizer, tiny_llama

#: a value other than the default, per option (the first other choice for choice options)
VALUES = {
    "--steps": "2",
    "--finetune-epochs": "2",
    "--max-batches": "3",
    "--bn-batches": "5",
    "--distill-alpha": "0.3",
    "--distill-temperature": "3",
    "--candidates": "2",
    "--score-batches": "3",
    "--final-epochs": "2",
    "--max-acc-drop": "1.5",
    "--lr": "0.5",
    "--batch-size": "7",
    "--seed": "3",
    "--seeds": "2",
    "--device": "cpu:0",
    "--round-to": "4",
    "--max-layer-ratio": "0.5",
    "--ignore": "conv1",
    "--nm": "1:4",
    "--input-shape": "1,1,8,8",
    "--regime": "decode:batch=2,context=64",
    "--finetune-steps": "5",
    "--max-ppl-rise": "50",
    "--lm-lr": "0.001",
    "--seq-len": "16",
    "--eval-windows": "2",
    "--calib-windows": "2",
    "--probe-windows": "3",
    "--measure-batch": "4",
    "--seconds": "2",
    "--windows": "3",
    "--hardware": "h100-sxm-2of4",
}
BUDGETS = {"--max-joules": "0.001", "--max-joules-per-token": "1e-9", "--target-energy": "0.6"}
#: what the test does not vary: they name the model, data and folder every run needs
FIXED = {"--help", "--out", "--data", "--weights"}


class Captured(Exception):
    def __init__(self, summary: dict) -> None:
        self.summary = summary


def _kind_summary(kind_or_data) -> dict:
    if hasattr(kind_or_data, "options"):  # a language model's kind
        data = kind_or_data.data
        return {
            "options": dataclasses.asdict(kind_or_data.options),
            "regime": kind_or_data.regime.to_dict(),
            "windows": list(data.train.shape),
        }
    return {"data": kind_or_data.name, "val": kind_or_data.val_source}


def _summary(dense, data, cfg, out, **kw) -> dict:
    kw = {k: v for k, v in kw.items() if not callable(v)}
    return {
        "cfg": repr(dataclasses.asdict(cfg)),
        "kind": _kind_summary(data),
        "kw": kw,
        "weights": state_digest(dense),
    }


@pytest.fixture
def stand_in(monkeypatch):
    from energyprune.pipeline import codesign, driver

    def run_and_write(dense, data, cfg, out, **kw):
        raise Captured(_summary(dense, data, cfg, out, **kw))

    def prune_or_quantize(dense, data, cfg, out, **kw):
        raise Captured({**_summary(dense, data, cfg, out, **kw), "tradeoff": True})

    monkeypatch.setattr(driver, "run_and_write", run_and_write)
    monkeypatch.setattr(codesign, "prune_or_quantize", prune_or_quantize)

    def load(name):
        return lms.LoadedLM(tiny_llama(2), CharTokenizer(), name, "a tiny random stand-in")

    monkeypatch.setattr(lms, "load_builtin_lm", load)


def _options() -> list[tuple[str, object]]:
    """(flag, default) of every `prune` option."""
    prune = build_parser()._subparsers._group_actions[0].choices["prune"]
    out = []
    for action in prune._actions:
        if not action.option_strings or FIXED & set(action.option_strings):
            continue
        out.append((action.option_strings, action))
    return out


def _with(base: list[str], option_strings, action) -> list[str]:
    flag = option_strings[0]
    if flag in BUDGETS:
        i = base.index("--target-energy")
        return [*base[:i], flag, BUDGETS[flag], *base[i + 2 :]]
    if (action.nargs == 0 and action.const is not None) or action.default is True:
        return [*base, option_strings[-1]]  # --distill / --no-distill: the non-default one
    if action.nargs == 0:
        return [*base, flag]
    if action.choices:
        return [*base, flag, next(str(c) for c in action.choices if c != action.default)]
    return [*base, flag, VALUES[flag]]


def _outcome(argv: list[str], capsys):
    try:
        code = main(argv)
    except Captured as c:
        return c.summary
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{argv[-2:]} neither reached the run nor was refused (exit {code})"
    assert len(err.splitlines()) == 1, err
    return err


def _bases(tmp_path) -> dict[str, list[str]]:
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    common = ["--target-energy", "0.7", "--out", str(tmp_path / "out")]
    return {
        "image": ["prune", "digits_cnn", "--data", "digits", *common],
        "lm": ["prune", "smollm2-135m", "--data", f"text:{text}", "--seq-len", "32", *common],
    }


@pytest.mark.parametrize("kind", ["image", "lm"])
def test_every_prune_option_changes_the_run_or_is_refused(kind, tmp_path, capsys, stand_in):
    base = _bases(tmp_path)[kind]
    reference = _outcome(base, capsys)
    assert isinstance(reference, dict)
    seen = {}
    for option_strings, action in _options():
        argv = _with(base, option_strings, action)
        got = _outcome(argv, capsys)
        seen[option_strings[0]] = "refused" if isinstance(got, str) else "changed"
        if isinstance(got, str):
            named = any(s in got for s in option_strings) or "torchrun" in got
            assert named, f"{option_strings[0]}: the refusal does not name it: {got}"
        else:
            assert got != reference, f"{option_strings[0]} changed nothing for {kind}"
    assert len(seen) > 40
    print(json.dumps(seen, indent=1))


def test_a_one_cut_prune_refuses_pipeline_flags(capsys, tmp_path):
    argv = ["prune", "digits_cnn", "--target-energy", "0.5", "--out", str(tmp_path / "o")]
    assert main([*argv, "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--steps sets the fine-tuning pipeline" in err


def test_a_language_model_refuses_the_gradual_schedule(tmp_path, capsys, stand_in):
    base = _bases(tmp_path)["lm"]
    assert main([*base, "--schedule", "gradual"]) == 2
    assert "--schedule gradual" in capsys.readouterr().err


def test_an_image_run_that_misses_its_budget_exits_1(tmp_path, capsys):
    argv = [
        "prune",
        "digits_cnn",
        "--data",
        "digits",
        "--target-energy",
        "0.3",
        "--max-layer-ratio",
        "0.1",
        "--steps",
        "1",
        "--finetune-epochs",
        "0",
        "--final-epochs",
        "0",
        "--max-acc-drop",
        "100",
        "--bn-batches",
        "0",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "energy budget MISSED" in printed
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["outcome"]["budget_met"] is False and report["stopped_early"]
