"""Layer specs are parsed from an allow-list with ast: torch.nn names and literals, never eval."""

from __future__ import annotations

import builtins

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from energyprune.errors import ConfigError
from energyprune.models.layerspec import default_input_shape, parse_layer
from energyprune.models.zoo import build_model


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 32),
    cout=st.integers(1, 32),
    k=st.integers(1, 5),
    stride=st.integers(1, 3),
    bias=st.booleans(),
)
def test_conv_spec_builds_what_the_constructor_builds(cin, cout, k, stride, bias):
    layer = parse_layer(f"Conv2d({cin}, {cout}, {k}, stride={stride}, bias={bias})")
    assert isinstance(layer, nn.Conv2d)
    assert layer.weight.shape == (cout, cin, k, k) and layer.stride == (stride, stride)
    assert (layer.bias is not None) == bias


def test_containers_nested_calls_and_literal_kinds():
    seq = parse_layer("Sequential(Conv2d(3, 16, (3, 3), padding='same'), ReLU(inplace=True))")
    assert [type(m) for m in seq] == [nn.Conv2d, nn.ReLU] and seq[0].padding == "same"
    assert parse_layer("LeakyReLU(-0.1)").negative_slope == -0.1
    assert parse_layer("Linear(in_features=3, out_features=4, bias=None)").bias is None
    enc = parse_layer(
        "TransformerEncoder(TransformerEncoderLayer(16, 2, batch_first=True), num_layers=2)"
    )
    assert len(enc.layers) == 2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("__import__('os')", "'__import__' is not a torch.nn module"),
        ("eval('Linear(3, 4)')", "'eval' is not a torch.nn module"),
        ("nn.Conv2d(3, 16, 3)", "attribute chains are refused"),
        ("torch.nn.Linear(3, 4)", "attribute chains are refused"),
        ("os.system('echo hi')", "attribute chains are refused"),
        ("Linear(3, 4).__class__", "is not a module constructor"),
        ("Parameter(1)", "'Parameter' is not a torch.nn module"),
        ("Tensor(3)", "'Tensor' is not a torch.nn module"),
        ("Linear(2 ** 3, 4)", "'2 ** 3' is not a literal"),
        ("Linear(3, 4, bias=os)", "'os' is not a literal"),
        ("Linear(3, x)", "'x' is not a literal"),
        ("Sequential(*[ReLU()])", "'*' arguments are refused"),
        ("Linear(**{'in_features': 3})", "'**' arguments are refused"),
        ("Linear([i for i in (3,)], 4)", "is not a literal"),
        ("Linear((lambda: 3)(), 4)", "is not a bare torch.nn name"),
        ("Linear(3, 4)[0]", "is not a module constructor"),
        ("Conv2d(3, 16, 3", "does not parse"),
        ("Linear(100000, 100000)", "parameters (limit"),
        ("Linear(3, -4)", "Linear refused its arguments"),
    ],
)
def test_refuses_anything_but_nn_names_and_literals(text, names, monkeypatch):
    def no_eval(*args, **kwargs):
        raise AssertionError("eval/exec must never run")

    monkeypatch.setattr(builtins, "eval", no_eval)
    monkeypatch.setattr(builtins, "exec", no_eval)
    with pytest.raises(ConfigError, match="layer spec") as err:
        parse_layer(text)
    assert names in str(err.value)


def test_every_command_takes_a_layer_spec():
    built = build_model("Conv2d(8, 16, 3, padding=1)")
    assert built.source == "layer" and built.input_shape == (1, 8, 32, 32)
    assert built.model(torch.randn(*built.input_shape)).shape == (1, 16, 32, 32)
    assert default_input_shape(parse_layer("Sequential(Linear(12, 4), ReLU())")) == (1, 12)
