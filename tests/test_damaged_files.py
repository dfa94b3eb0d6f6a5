"""Every file we read may be damaged: cut short or overwritten at a random offset, a dataset
archive, an image folder, a measurement table, a weights file, a saved plan and a profile YAML
either still read or fail with our error (one line naming the file, exit 2 in the CLI), never
with a library's exception."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energyprune.errors import EnergyPruneError

DAMAGE = st.tuples(
    st.sampled_from(["truncate", "overwrite", "zero"]),
    st.floats(0.0, 1.0),  # where, as a fraction of the file
    st.binary(min_size=1, max_size=16),  # what is written there
)


def _damage(blob: bytes, how: tuple[str, float, bytes]) -> bytes:
    mode, where, junk = how
    at = min(int(where * len(blob)), max(len(blob) - 1, 0))
    if mode == "truncate":
        return blob[:at]
    if mode == "zero":
        return blob[:at] + bytes(min(64, len(blob) - at)) + blob[at + 64 :]
    return blob[:at] + junk + blob[at + len(junk) :]


def _png(value: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _archive(path: Path) -> None:
    with tarfile.open(path, "w:xz") as tar:
        for split in ("train", "test"):
            for cls in ("a", "b"):
                for i in range(2):
                    blob = _png(40 * i + (cls == "b") * 100)
                    info = tarfile.TarInfo(f"data/{split}/{cls}/{i}.png")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))


def _read_images(path: Path) -> None:
    from energyprune.pipeline.data import load_image_folder

    load_image_folder(path)


def _read_table(path: Path) -> None:
    from energyprune.energy.calibration.tables import read_table

    read_table(path)


def _read_weights(path: Path) -> None:
    from energyprune.models.architectures import digits_cnn
    from energyprune.models.zoo import load_weights

    load_weights(digits_cnn(), path)


def _read_plan(path: Path) -> None:
    from energyprune.pruning.export import load

    load(path.parent)


def _read_profile(path: Path) -> None:
    from energyprune.energy.hardware.profile import load_hardware

    load_hardware(path)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[Path, Callable[[Path], None]]]:
    """One good file of each kind (and the reader that takes it)."""
    import torch
    from safetensors.torch import save_file

    from energyprune.energy.hardware.profile import _PROFILE_DIR
    from energyprune.models.architectures import digits_cnn
    from energyprune.models.placement import example_input
    from energyprune.pruning.apply import prune
    from energyprune.pruning.export import save

    root = tmp_path_factory.mktemp("good")
    _archive(root / "images.tar.xz")
    (root / "table.csv").write_text(
        "model,input_shape,dtype,joules_per_sample\n"
        + "".join(f'"Conv2d(3, {8 * i}, 3)","1,3,16,16",fp32,{i * 1e-6}\n' for i in (1, 2, 3))
    )
    lines = [{"model": f"Linear({8 * i}, 8)", "input_shape": [1, 8 * i], "dtype": "fp32",
              "joules_per_sample": i * 1e-7} for i in (1, 2)]  # fmt: skip
    (root / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    model = digits_cnn().eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(root / "weights.safetensors"))
    torch.manual_seed(0)
    result = prune(model, example_input(model, (1, 1, 8, 8)), target_energy=0.6)
    result.plan.arch = {"name": "digits_cnn"}
    save(result, root / "pruned")
    (root / "profile.yaml").write_text((_PROFILE_DIR / "horowitz-45nm.yaml").read_text())
    return {
        "archive": (root / "images.tar.xz", _read_images),
        "csv table": (root / "table.csv", _read_table),
        "jsonl table": (root / "table.jsonl", _read_table),
        "weights": (root / "weights.safetensors", _read_weights),
        "plan.json": (root / "pruned" / "plan.json", _read_plan),
        "profile yaml": (root / "profile.yaml", _read_profile),
    }


def test_the_good_files_read(originals, tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYPRUNE_CACHE", str(tmp_path))
    for path, read in originals.values():
        read(path)


@pytest.mark.parametrize(
    "kind", ["archive", "csv table", "jsonl table", "weights", "plan.json", "profile yaml"]
)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(how=DAMAGE)
def test_a_damaged_file_fails_only_with_our_error(
    originals, tmp_path_factory, monkeypatch, kind, how
):
    path, read = originals[kind]
    work = tmp_path_factory.mktemp("damaged")
    monkeypatch.setenv("ENERGYPRUNE_CACHE", str(work / "cache"))  # never a cached good copy
    if kind == "plan.json":  # the plan is read from its folder, beside the weights
        target = work / "pruned" / "plan.json"
        target.parent.mkdir()
        (target.parent / "model.safetensors").write_bytes(
            (path.parent / "model.safetensors").read_bytes()
        )
    else:
        target = work / path.name
    target.write_bytes(_damage(path.read_bytes(), how))
    try:
        read(target)
    except EnergyPruneError as e:
        message = str(e)
        assert message and "\n" not in message.strip(), message
        assert target.name in message or str(target.parent) in message, message


def _one_line_exit_2(argv: list[str], capsys) -> str:
    from energyprune.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_truncated_cifar_archive_is_one_line(originals, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENERGYPRUNE_CACHE", str(tmp_path / "cache"))
    blob = originals["archive"][0].read_bytes()
    cut = tmp_path / "cifar10.tar.xz"
    cut.write_bytes(blob[: len(blob) // 2])
    argv = ["prune", "resnet20", "--data", f"cifar10:{cut}", "--target-energy", "0.5"]
    argv += ["--out", str(tmp_path / "o")]
    assert "damaged" in _one_line_exit_2(argv, capsys)
    assert not (tmp_path / "o").exists()


def test_an_empty_measurement_table_is_one_line(tmp_path, capsys):
    table = tmp_path / "empty.csv"
    table.write_text("")
    argv = ["calibrate", "--from", str(table), "--out", str(tmp_path / "p.yaml")]
    assert "holds no rows" in _one_line_exit_2(argv, capsys)
    header_only = tmp_path / "header.csv"
    header_only.write_text("model,input_shape,dtype,joules_per_sample\n")
    argv = ["calibrate", "--from", str(header_only), "--out", str(tmp_path / "p.yaml")]
    assert "holds no rows" in _one_line_exit_2(argv, capsys)
    assert not (tmp_path / "p.yaml").exists()


def test_out_under_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from energyprune.pipeline import driver

    def no_work(*a, **k):
        raise AssertionError("the run started before --out was checked")

    monkeypatch.setattr(driver, "run_kind", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["prune", "digits_cnn", "--data", "digits", "--target-energy", "0.5"]
    argv += ["--out", str(blocker / "run")]
    assert "is a file, not a folder" in _one_line_exit_2(argv, capsys)
    argv = ["calibrate", "--from", str(blocker), "--out", str(tmp_path)]  # a folder as file
    assert "is a folder" in _one_line_exit_2(argv, capsys)


def test_measuring_a_folder_with_a_damaged_plan_is_one_line(originals, tmp_path, capsys):
    good = originals["plan.json"][0].parent
    folder = tmp_path / "pruned"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    (folder / "plan.json").write_text((good / "plan.json").read_text()[:50])
    line = _one_line_exit_2(["measure", str(folder), "--no-meter"], capsys)
    assert "plan.json" in line and "not a valid plan" in line
