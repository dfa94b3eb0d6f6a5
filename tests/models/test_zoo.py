"""Model resolution and safe weight loading, including the shared pretrained fixtures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from energyprune.energy.pricing.estimates import profile
from energyprune.errors import ConfigError, WeightsError
from energyprune.models.zoo import (
    build_model,
    load_weights,
    parse_input_shape,
    read_state_dict,
)

# (params, MACs at 1x3x32x32) from shared/fixtures/README.md
CIFAR = {
    "resnet20": (272_474, 40_813_184),
    "resnet56": (855_770, 125_747_840),
    "vgg16_bn": (14_724_042, 313_201_664),
}


@pytest.mark.parametrize("name", sorted(CIFAR))
def test_builtin_cifar_models_match_the_fixture_spec(name):
    built = build_model(name)
    assert built.input_shape == (1, 3, 32, 32) and built.source == "builtin"
    with torch.no_grad():
        prof = profile(built.model, torch.randn(*built.input_shape))
    assert (prof.total.params, prof.total.macs) == CIFAR[name]


def test_resnet56_fixture_loads_and_classifies(fixtures_dir):
    model = build_model("resnet56").model
    load_weights(model, fixtures_dir / "cifar10_resnet56.safetensors")
    assert model.fc.weight.abs().sum() > 0


def test_sharded_vgg_fixture_loads(fixtures_dir):
    model = build_model("vgg16_bn").model
    load_weights(model, fixtures_dir / "cifar10_vgg16_bn.safetensors.index.json")
    state = read_state_dict(fixtures_dir / "cifar10_vgg16_bn.safetensors.index.json")
    assert torch.equal(model.classifier.weight, state["classifier.weight"])


def test_weights_of_another_architecture(fixtures_dir):
    with pytest.raises(WeightsError, match="do not fit this architecture"):
        load_weights(build_model("resnet20").model, fixtures_dir / "cifar10_resnet56.safetensors")


def test_weight_formats_round_trip(tmp_path):
    model = build_model("resnet20").model
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, str(tmp_path / "s-1.safetensors"))
    save_file({k: state[k] for k in keys[half:]}, str(tmp_path / "s-2.safetensors"))
    index = {"metadata": {}, "weight_map": {k: "s-1.safetensors" for k in keys[:half]}}
    index["weight_map"].update({k: "s-2.safetensors" for k in keys[half:]})
    (tmp_path / "s.safetensors.index.json").write_text(json.dumps(index))
    for name in ("w.safetensors", "w.pt", "s.safetensors.index.json"):
        fresh = build_model("resnet20").model
        load_weights(fresh, tmp_path / name)
        assert torch.equal(fresh.fc.weight, model.fc.weight)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save(Evil(), tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(tmp_path / "evil.pt")


def test_missing_and_corrupt_weights(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")


def test_model_specs():
    assert build_model("resnet18").source == "torchvision"
    assert build_model("energyprune.models.architectures:resnet20").source == "factory"
    with pytest.raises(ConfigError, match="did you mean resnet56"):
        build_model("resnet57")
    with pytest.raises(ConfigError, match="cannot import"):
        build_model("no_such_module:make")


@pytest.mark.parametrize("text", ["1,3,a", "", "1,-3,32", "0,3"])
def test_malformed_input_shape(text):
    with pytest.raises(ConfigError, match="malformed input shape"):
        parse_input_shape(text)


def test_input_shape_forms():
    assert parse_input_shape("1,3,224,224") == parse_input_shape("1x3x224x224") == (1, 3, 224, 224)
