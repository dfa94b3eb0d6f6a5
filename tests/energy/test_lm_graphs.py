"""The ``graphs`` runtime: a serving stack's fused kernels, no per-op launch (issue 36).

Hand counts: a Llama decoder layer runs 9 kernels (add + norm, QKV, QK-norm + RoPE + cache
write, attention, O, add + norm, gate/up, SiLU x mul, down); around the layers, the embedding,
the final add + norm and the LM head. A tiny model at batch 1 is floor-bound in every kernel,
so its step takes (9 x layers + 3) x 2 us on h100-sxm.
"""

from __future__ import annotations

from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from energyprune.energy.hardware.profile import load_hardware  # noqa: E402
from energyprune.energy.lm.graphs import kernels  # noqa: E402
from energyprune.energy.lm.per_token import as_meta_model, lm_traces, profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import Decode  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"
LAYERS = 2
HW = "h100-sxm-datasheet"  # the 2 us floor these hand counts use
LAYER_KERNELS = {
    "input_layernorm",
    "self_attn.qkv",
    "self_attn.rope",
    "self_attn.attn",
    "self_attn.o_proj",
    "post_attention_layernorm",
    "mlp.gate_up",
    "mlp.act",
    "mlp.down_proj",
}


def _tiny(dtype: str = "bfloat16", family: str = "llama"):
    make = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}[family]
    return make(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=LAYERS,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
        torch_dtype=dtype,
    )


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_each_decoder_layer_runs_nine_fused_kernels(family):
    model, _ = as_meta_model(_tiny(family=family))
    tr = lm_traces(model, Decode(1, 16))[0].trace
    names = [k.name for k in kernels(tr, load_hardware("h100-sxm-datasheet"), None)]
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        assert {n.removeprefix(prefix) for n in names if n.startswith(prefix)} == LAYER_KERNELS
    assert [n for n in names if not n.startswith("model.layers.")] == [
        "model.embed_tokens",
        "model.norm",
        "lm_head",
    ]
    # the residual adds run inside the norm kernels; casts and integer bookkeeping run nowhere
    members = {i for k in kernels(tr, load_hardware("h100-sxm-datasheet"), None) for i in k.members}
    assert all(tr.records[i].op != "aten._to_copy.default" for i in members)


def test_a_floor_bound_step_takes_one_floor_per_kernel():
    hw = load_hardware("h100-sxm-datasheet")
    floor = hw.runtime.graph_kernel_s
    assert floor == pytest.approx(2e-6)
    lm = profile_lm(_tiny(), Decode(1, 16), hw)
    step = (9 * LAYERS + 3) * floor  # every kernel is far below 2 us of roofline time
    assert lm.seconds == pytest.approx(step, rel=1e-9)
    assert lm.total("static_j") == pytest.approx(hw.static_w * step, rel=1e-9)
    assert lm.runtime.startswith("graphs") and lm.to_dict()["runtime"].startswith("graphs")
    eager = profile_lm(_tiny(), Decode(1, 16), hw, runtime="eager")
    assert eager.runtime.startswith("eager") and eager.seconds > 5 * lm.seconds


def test_a_bf16_config_never_prices_above_the_fp32_model_of_its_shape():
    """Casts inside a fused kernel cost nothing, so halving the bytes can only save."""
    for config in ("smollm2-135m.json", "llama-3.2-1b.json"):
        spec = CONFIGS / config
        bf16 = profile_lm(f"hf:{spec}", Decode(1, 512), "h100-sxm-datasheet")
        model, _ = as_meta_model(f"hf:{spec}")
        fp32 = profile_lm(model.float(), Decode(1, 512), "h100-sxm-datasheet")
        assert (bf16.dtype, fp32.dtype) == ("bf16", "fp32")
        assert bf16.energy_j <= fp32.energy_j, config
    for batch in (1, 8, 64):
        bf16, fp32 = (profile_lm(_tiny(d), Decode(batch, 64), HW) for d in ("bfloat16", "float32"))
        assert bf16.energy_j <= fp32.energy_j, batch


def test_a_llama_3_2_1b_shape_prices_above_smollm2_at_batch_1():
    """Eager pricing had it backwards (SmolLM2's 30 layers launch more ops): decode at batch 1
    reads weights, and the 1B model has nine times SmolLM2's."""
    small, big = (
        profile_lm(f"hf:{CONFIGS / c}", Decode(1, 1024), "h100-sxm-datasheet")
        for c in ("smollm2-135m.json", "llama-3.2-1b.json")
    )
    assert big.energy_j > small.energy_j
    assert big.seconds > small.seconds
