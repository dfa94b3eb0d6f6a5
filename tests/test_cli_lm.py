"""`energyprune profile hf:PATH` with the serving regimes: table, JSON, one-line errors."""

from __future__ import annotations

import json
import sys

import pytest

from energyprune.cli import main
from tests.conftest import REPO

pytest.importorskip("transformers")

CONFIG = REPO / "benchmarks" / "configs" / "smollm2-135m.json"
HF = f"hf:{CONFIG}"


@pytest.mark.parametrize(
    ("flags", "phase", "basis"),
    [
        (["--phase", "decode", "--batch", "8", "--context", "256"], "decode", "generated token"),
        (["--phase", "prefill", "--prompt", "128"], "prefill", "prompt token"),
        (["--workload", "prompt=64,output=16,batch=4"], "workload", "output token"),
    ],
)
def test_profile_a_config_in_each_regime(tmp_path, capsys, flags, phase, basis):
    out = tmp_path / "lm.json"
    argv = ["profile", HF, *flags, "--hardware", "h100-sxm", "--json", str(out), "--top", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "estimated energy" in printed and f"per {basis}" in printed
    data = json.loads(out.read_text())
    assert data["estimated"] is True and data["regime"]["phase"] == phase
    assert data["per_token"]["energy_j"] > 0 and data["per_token"]["seconds"] > 0
    assert data["per_token"]["kv_bytes"] > 0 and len(data["layers"]) > 30


def test_a_config_folder_works_like_its_file(tmp_path, capsys):
    (tmp_path / "config.json").write_text(CONFIG.read_text())
    assert main(["profile", f"hf:{tmp_path}", "--top", "1"]) == 0
    assert "decode, batch 1, 1024 tokens of context" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "resnet20", "--phase", "decode"], "price language models: pass MODEL as"),
        (["profile", "resnet20", "--weights-dtype", "int4"], "--weights-dtype: these flags"),
        (["profile", HF, "--group-size", "64"], "--group-size 64 needs --weights-dtype"),
        (["profile", "hf:nowhere/config.json"], "no Hugging Face config"),
        (["profile", HF, "--workload", "prompt=8"], "--workload needs output"),
        (["profile", HF, "--workload", "prompt=8,output=2", "--phase", "decode"], "not both"),
        (["profile", HF, "--batch", "0"], "batch must be"),
        (["profile", HF, "--plot", "x.png"], "not for language models"),
        (["measure", HF], "priced per token by `energyprune profile`"),
    ],
)
def test_lm_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "hidden_size": ')
    assert main(["profile", f"hf:{bad}"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_without_transformers_the_error_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers → ImportError
    assert main(["profile", HF]) == 2
    err = capsys.readouterr().err
    assert "pip install 'energyprune[hf]'" in err and len(err.strip().splitlines()) == 1


def test_profile_prices_a_served_model_over_gpus_with_int4_weights(capsys):
    assert main(["profile", HF, "--tensor-parallel", "3", "--weights-dtype", "int4",
                 "--group-size", "32", "--top", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "int4 weights (group 32), tensor parallel over 3 GPUs" in out


def test_the_summary_and_json_name_the_runtime_dtype_and_calibration(tmp_path, capsys):
    out = tmp_path / "lm.json"
    assert main(["profile", HF, "--top", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "h100-sxm (uncalibrated), bf16, graphs (CUDA graphs, 9 fused kernels" in printed
    data = json.loads(out.read_text())
    assert data["runtime"].startswith("graphs") and data["calibration"] == "uncalibrated"
    assert data["dtype"] == "bf16"
    assert main(["profile", HF, "--top", "1", "--runtime", "eager"]) == 0
    assert "eager (one kernel launch per aten op)" in capsys.readouterr().out
    assert main(["profile", "resnet20", "--runtime", "eager"]) == 2
    assert "--runtime: these flags price language models" in capsys.readouterr().err
