"""`energyprune prune` on a language model, end to end on a tiny stand-in for the built-in LM
(the real weights are a benchmark's, not a test's): report.md, report.json, a folder that
from_pretrained loads, the guardrail's exit code, and one-line errors."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")

from energyprune.cli import main  # noqa: E402
from energyprune.models import lms  # noqa: E402
from tests.tiny_lms import CharTokenizer, tiny_llama  # noqa: E402


@pytest.fixture
def tiny_lm(monkeypatch):
    def load(name):
        return lms.LoadedLM(tiny_llama(4), CharTokenizer(), name, "a tiny random stand-in")

    monkeypatch.setattr(lms, "load_builtin_lm", load)


def _argv(tmp_path, *extra):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return ["prune", "smollm2-135m", "--data", f"text:{text}", "--target-energy", "0.7",
            "--seq-len", "32", "--eval-windows", "4", "--calib-windows", "4",
            "--finetune-steps", "3", "--out", str(tmp_path / "out"), *extra]  # fmt: skip


def test_prune_an_lm_end_to_end(tmp_path, capsys, tiny_lm):
    assert main(_argv(tmp_path, "--regime", "decode:batch=1,context=128")) == 0
    printed = capsys.readouterr().out
    assert "dense baseline: perplexity" in printed and "after recovery" in printed
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["energy_ratio"] <= 0.701 and report["estimated"] is True
    assert report["regime"]["context"] == 128 and report["ppl_after_cut"]["windows"] == 4
    assert "ppl after recovery" in (out / "report.md").read_text()


def test_the_out_folder_is_the_model_that_from_pretrained_loads(tmp_path, tiny_lm):
    """Depth cuts keep every layer's widths, so DIR loads with from_pretrained as it is, the
    reports beside the weights, and scores the perplexity the run reported for its model."""
    from energyprune.pipeline.text import load_text, perplexity

    argv = _argv(tmp_path, "--lm-method", "depth", "--regime", "decode:batch=1,context=128")
    assert main(argv) == 0
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["from_pretrained"] == "yes" and (out / "report.md").is_file()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert loaded.config.num_hidden_layers < 4  # the cut, not the dense model
    data = load_text(f"text:{tmp_path / 'text.txt'}", CharTokenizer(), 32)
    ppl = perplexity(loaded, data.eval, limit=4).value
    assert ppl == pytest.approx(report["ppl_after_recovery"]["ppl"], rel=1e-5)


def test_a_failed_guardrail_exits_1(tmp_path, capsys, tiny_lm, monkeypatch):
    from energyprune.pipeline import kind, lm_kind

    class Failing(kind.PerplexityRise):
        def check(self, dense, after):  # a random tiny model may even improve when cut
            return kind.Verdict(False, "guardrail FAILED: x", {"val_ppl": after})

    monkeypatch.setattr(lm_kind, "PerplexityRise", Failing)
    assert main(_argv(tmp_path, "--max-ppl-rise", "0")) == 1
    assert "guardrail FAILED" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["guardrail_ok"] is False and report["outcome"]["ok"] is False
    assert "guardrail failed after 3 attempts" in report["stopped_early"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--regime", "decode:beam=2"], "--regime decode takes"),
        (["--finetune-steps", "-1"], "--finetune-steps"),
        (["--eval-windows", "0"], "--eval-windows"),
        (["--probe-windows", "0"], "--probe-windows"),
    ],
)
def test_lm_prune_bad_input_is_one_line(tmp_path, capsys, tiny_lm, extra, message):
    assert main(_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_sparsity_the_profile_cannot_pay_for_is_said_in_one_line(tmp_path, capsys, tiny_lm):
    argv = _argv(tmp_path, "--lm-method", "wanda-2:4", "--hardware", "h100-sxm")
    assert main(argv) == 1  # sparsity the profile prices as dense misses any budget
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if line.startswith("note:")]
    assert len(lines) == 1 and "declares no 2:4 kernels" in lines[0]
    assert any(line.startswith("energy budget MISSED: 1.000 of dense") for line in printed)


def _budget(tmp_path, *flags):
    argv = _argv(tmp_path, "--regime", "decode:batch=1,context=128", "--hardware", "h100-sxm",
                 *flags)  # fmt: skip
    i = argv.index("--target-energy")
    return argv[:i] + argv[i + 2 :]


def test_an_absolute_joules_per_token_budget(tmp_path, tiny_lm):
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import Decode

    dense = profile_lm(tiny_llama(4), Decode(1, 128), "h100-sxm").energy_j
    assert main(_budget(tmp_path, "--max-joules-per-token", str(0.75 * dense))) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pruned_j_per_token"] <= 0.75 * dense * 1.001
    assert report["budget"]["target_energy"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-joules-per-token", "1"], "is not below the dense model's"),
        (["--max-joules-per-token", "0"], "must be > 0"),
        (["--max-joules", "1"], "use --max-joules-per-token"),
    ],
)
def test_a_bad_absolute_budget_is_one_line(tmp_path, capsys, tiny_lm, flags, message):
    assert main(_budget(tmp_path, *flags)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_joules_per_token_is_refused_for_a_cnn(capsys):
    assert main(["prune", "resnet20", "--max-joules-per-token", "1", "--out", "x"]) == 2
    assert "does nothing for an image classifier" in capsys.readouterr().err
