"""A language model measured as a server runs it: each step is one decode step at context L in
a filled static cache, and J per token is the window's joules over the tokens it produced."""

from __future__ import annotations

import itertools

import pytest
import torch

pytest.importorskip("transformers")

from energyprune.deploy.runtime import capture_cuda_graph
from energyprune.energy.measurement.lm_decode import LMSetting, measure_lm
from energyprune.energy.measurement.meters import CounterMeter
from energyprune.energy.measurement.protocol import MeasurementProtocol
from energyprune.errors import ConfigError
from energyprune.models.hf import build_hf, served_step
from tests.tiny_lms import tiny_llama


def test_a_decode_step_reads_a_filled_cache_at_its_context():
    model = tiny_llama(2)
    served = served_step(model, "decode", 3, 10, seed=1)
    first, again = served.run().logits, served.run().logits
    # the cache really holds the prompt: the step's logits are those of the whole sequence
    whole = torch.cat([served.prompt_ids, served.step.inputs["input_ids"]], dim=1)
    reference = model(input_ids=whole, use_cache=False).logits[:, -1:]
    assert first.shape == (3, 1, 64) and served.step.tokens == 3
    torch.testing.assert_close(first, reference, rtol=1e-4, atol=1e-5)
    assert torch.equal(first, again)  # the same slot is rewritten: a steady state


def _spy(model):
    """(context the cache held, input shape) at every forward pass of ``model``."""
    seen = []

    def hook(module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        seen.append((int(cache.get_seq_length()), tuple(kwargs["input_ids"].shape)))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def _protocol(**settings) -> MeasurementProtocol:
    """A simulated clock: every read is one second later, so each timed run of n steps lasts
    1 s and a 2.5 s window holds exactly ceil(2.5 / 1) = 3 steps."""
    clock = itertools.count().__next__
    options = {"min_window_s": 2.5, "windows": 2, "warmup_s": 0, "idle_s": 0, **settings}
    return MeasurementProtocol(**options, clock=clock, sleep=lambda s: None)


def _ten_joules_a_window() -> CounterMeter:
    reads = itertools.count(step=10.0)  # begin and end are one read apart: 10 J per window
    return CounterMeter(lambda: next(reads))


def test_joules_per_token_is_window_joules_over_batch_times_steps():
    model = tiny_llama(2)
    seen = _spy(model)
    setting = LMSetting("decode", batch=2, length=8)
    m = measure_lm(model, setting, meter=_ten_joules_a_window(), protocol=_protocol())
    assert [w.iterations for w in m.result.windows] == [3, 3]
    assert m.joules_per_token == pytest.approx(10 / (2 * 3))  # 10 J / (B = 2 x 3 steps)
    assert m.tokens_per_s == pytest.approx(2 * 3 * 2 / 2.0)  # 12 tokens in 2 s of windows
    row = m.to_dict()
    assert row["measured"] is True and row["joules_per_token"] == pytest.approx(10 / 6)
    assert row["context"] == 8 and row["batch"] == 2 and row["meter"]["backend"] == "counter"
    assert row["windows"][0]["tokens"] == 6 and row["basis"] == "generated token"
    # after the fill (the one pass of 8 tokens), every measured step is B new tokens at 8
    assert seen[0] == (0, (2, 8))
    assert set(seen[1:]) == {(8, (2, 1))} and len(seen) > 10


def test_a_prefill_is_priced_per_prompt_token():
    setting = LMSetting("prefill", batch=2, length=5)
    m = measure_lm(tiny_llama(2), setting, meter=_ten_joules_a_window(), protocol=_protocol())
    assert m.setting.tokens_per_step == 10
    assert m.joules_per_token == pytest.approx(10 / (10 * 3))  # 10 J / (2 x 5 tokens x 3)
    assert m.to_dict()["prompt"] == 5 and "context" not in m.to_dict()


def test_without_a_meter_nothing_is_joules():
    m = measure_lm(tiny_llama(2), LMSetting(batch=4, length=4), meter=None, protocol=_protocol())
    row = m.to_dict()
    assert row["measured"] is False and row["joules_per_token"] is None
    assert row["unavailable_reason"] == "meter disabled" and row["tokens_per_s"] > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"phase": "workload"}, "--phase decode (J per generated token"),
        ({"cuda_graph": True}, "--cuda-graph captures CUDA kernels and --device is cpu"),
        ({"batch": 0}, "--batch must be a whole number >= 1"),
        ({"phase": "prefill", "length": 0}, "--prompt must be"),
        ({"dtype": "int8"}, "--dtype must be one of"),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(ConfigError) as e:
        LMSetting(**settings)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_config_builds_the_same_random_weights_from_its_seed():
    config = tiny_llama(1).config
    a, b = build_hf(config, torch.float32, seed=0), build_hf(config, torch.float32, seed=0)
    state = torch.random.get_rng_state()
    c = build_hf(config, torch.float32, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    weight = "model.layers.0.mlp.up_proj.weight"
    assert not a.state_dict()[weight].is_meta
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_captured_decode_step_replays_the_eager_one():
    model = tiny_llama(2)
    setting = LMSetting("decode", batch=4, length=32, device="cuda", cuda_graph=True)
    m = measure_lm(model, setting, meter=None, protocol=MeasurementProtocol(0.05, 1, 0, 0))
    assert m.to_dict()["cuda_graph"] is True and m.tokens_per_s > 0
    served = served_step(model, "decode", 4, 32)
    eager = served.run().logits.clone()
    replay = capture_cuda_graph(served.run)
    replay()
    torch.cuda.synchronize()
    assert torch.equal(served.run().logits, eager)  # the rewound cache gives the same step
