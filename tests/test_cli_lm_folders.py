"""A language model by folder, through every command: `prune DIR` on a tiny Llama saved with
save_pretrained runs the one loop, and `profile`, `measure` and `export` take the folder that
run writes (as `prune smollm2-135m` does for the built-in; `profile smollm2-135m` needs no
weights). LMs priced without --hardware are priced on a GPU profile and say which."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")

from energyprune.cli import main  # noqa: E402
from tests.tiny_lms import saved_tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    saved_tiny_llama(root / "dense")
    text = root / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    argv = ["prune", f"hf:{root / 'dense'}", "--data", f"text:{text}", "--target-energy", "0.7",
            "--seq-len", "32", "--eval-windows", "4", "--calib-windows", "4",
            "--finetune-steps", "2", "--lm-method", "depth", "--max-ppl-rise", "1000",
            "--out", str(root / "out")]  # fmt: skip
    code = main(argv)
    return root, code


def test_prune_an_hf_folder_through_the_one_loop(pruned, capsys):
    root, code = pruned
    assert code == 0
    out = root / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "language model" and report["hardware"] == "h100-sxm"
    assert report["energy_ratio"] <= 0.701 and report["outcome"]["budget_met"]
    assert (out / "checkpoint.json").is_file() and (out / "config.json").is_file()
    assert "drops decoder layers" in (out / "report.md").read_text()


def test_profile_measure_and_export_take_the_folder_prune_wrote(pruned, capsys, tmp_path):
    root, _ = pruned
    out = root / "out"
    capsys.readouterr()
    assert main(["profile", str(out), "--phase", "decode", "--json", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    assert "priced on h100-sxm, the default for language models" in printed
    priced = json.loads((tmp_path / "p.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert priced["hardware"] == "h100-sxm" and priced["per_token"]["energy_j"] > 0
    assert main(["measure", str(out), "--no-meter", "--device", "cpu", "--context", "8",
                 "--seconds", "0.01", "--windows", "2", "--warmup", "0", "--idle", "0",
                 "--json", str(tmp_path / "m.json")]) == 0  # fmt: skip
    measured = json.loads((tmp_path / "m.json").read_text())
    assert measured["context"] == 8 and measured["batch"] == 1 and measured["measured"] is False
    assert measured["weights"].startswith("weights from")
    assert main(["export", str(out), "--onnx", str(tmp_path / "lm.onnx"), "--seq-len", "8"]) == 0
    assert (tmp_path / "lm.onnx").stat().st_size > 0
    assert report["dense_j_per_token"] > 0


def test_profile_the_built_in_lm_by_name_without_its_weights(capsys):
    assert main(["profile", "smollm2-135m", "--phase", "decode", "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "h100-sxm" in printed and "per generated token" in printed


def test_search_a_language_model_through_the_one_loop(pruned, capsys, tmp_path):
    root, _ = pruned
    text = root / "text.txt"
    argv = ["search", f"hf:{root / 'dense'}", "--data", f"text:{text}", "--trials", "3",
            "--methods", "depth,width,energy+bits", "--target-range", "0.6:0.9", "--seq-len", "32",
            "--eval-windows", "4", "--calib-windows", "4", "--finetune-steps", "1",
            "--out", str(tmp_path / "s")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "knee: trial" in printed
    front = json.loads((tmp_path / "s" / "pareto.json").read_text())
    assert front["objectives"] == ["perplexity", "energy"] and len(front["trials"]) == 3
    assert any(t["pareto"] for t in front["trials"]) and front["knee"] is not None
    tried = [t["params"]["method"] for t in sorted(front["trials"], key=lambda t: t["number"])]
    assert tried == ["depth", "width", "energy+bits"]  # every choice once, in order, first
    assert (tmp_path / "s" / "trial-0" / "checkpoint.json").is_file()  # the one loop's
    assert (tmp_path / "s" / "pareto.png").stat().st_size > 0
    bad = ["search", "digits_cnn", "--regime", "decode:batch=2,context=8", "--out", str(tmp_path)]
    assert main(bad) == 2 and "--regime does nothing for an image" in capsys.readouterr().err
