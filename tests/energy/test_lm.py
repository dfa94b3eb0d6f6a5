"""Energy per token of language models, on tiny random configs of each family (no download).

Analytic counts the tracer must reproduce from the model's own code:
* FLOPs = 2 x (linear MACs + attention MACs); linear MACs per token are the active weights
  (a mixture of experts: the router and top-k experts); the LM head runs once per sequence in
  prefill (servers sample from the last position) and once per token in decode; attention is
  (dq + dv) MACs per visible (query, key) pair and query head, a causal prefill of S tokens
  seeing S(S+1)/2 pairs, a decode step L + 1 (the cache and its new token).
* weight bytes of a decode step = every weight once (the embedding table: only the gathered
  rows; tied embeddings: the LM head reads the whole table) x dtype bytes.
* KV bytes per decode token = 2 x layers x kv_heads x head_dim x (L + 1) x dtype bytes read
  plus one position written.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from energyprune.energy.lm.per_token import profile_lm  # noqa: E402
from energyprune.energy.lm.regimes import (  # noqa: E402
    Decode,
    Prefill,
    Workload,
    parse_workload,
    touched_experts,
)
from energyprune.errors import ConfigError  # noqa: E402

D, INTER, LAYERS, HEADS, KV, HEAD_DIM, VOCAB = 64, 96, 2, 8, 2, 8, 128
BF16 = 2
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=D,
    intermediate_size=INTER,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=KV,
    max_position_embeddings=4096,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
    tie_word_embeddings=False,
)
EXPERTS, TOP_K, MOE_INTER = 4, 2, 32


def _config(family: str):
    make = {
        "llama": lambda: transformers.LlamaConfig(**COMMON),
        "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=None),
        "qwen2": lambda: transformers.Qwen2Config(**COMMON),
        "qwen3": lambda: transformers.Qwen3Config(**COMMON, head_dim=HEAD_DIM),
        "gemma3": lambda: transformers.Gemma3TextConfig(
            **COMMON, head_dim=HEAD_DIM, sliding_window=4096
        ),
        "phi3": lambda: transformers.Phi3Config(**COMMON),
        "gemma2": lambda: transformers.Gemma2Config(
            **COMMON, head_dim=HEAD_DIM, sliding_window=4096
        ),
        "mixtral": lambda: transformers.MixtralConfig(
            **{**COMMON, "intermediate_size": MOE_INTER},
            num_local_experts=EXPERTS,
            num_experts_per_tok=TOP_K,
        ),
        "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
            **COMMON,
            head_dim=HEAD_DIM,
            num_experts=EXPERTS,
            num_experts_per_tok=TOP_K,
            moe_intermediate_size=MOE_INTER,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        ),
    }
    return make[family]()


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "mixtral", "qwen3_moe"]
#: Gemma-2 runs eager attention (transformers has no SDPA path for its logit soft-capping):
#: its prefill computes every score, masked or not, so only its decode meets the causal count.
DECODE_FAMILIES = [*FAMILIES, "gemma2"]
MOE = {"mixtral", "qwen3_moe"}


def _linear_macs_per_token(family: str) -> int:
    attention = D * HEADS * HEAD_DIM * 2 + D * KV * HEAD_DIM * 2  # q, o; k, v
    # a mixture of experts: the router and the active experts; else gate, up and down
    mlp = D * EXPERTS + TOP_K * 3 * D * MOE_INTER if family in MOE else 3 * D * INTER
    return LAYERS * (attention + mlp)


def _attention_macs(batch: int, pairs: int) -> int:
    return LAYERS * batch * HEADS * pairs * 2 * HEAD_DIM


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_flops_match_the_analytic_count(family):
    batch, prompt = 2, 12
    lm = profile_lm(_config(family), Prefill(batch, prompt))
    tokens = batch * prompt
    macs = _linear_macs_per_token(family) * tokens + VOCAB * D * batch
    macs += _attention_macs(batch, prompt * (prompt + 1) // 2)  # causal: counted once
    assert lm.total("flops") * tokens == pytest.approx(2 * macs, rel=0.01)


@pytest.mark.parametrize("family", DECODE_FAMILIES)
def test_decode_flops_match_the_analytic_count(family):
    batch, context = 3, 20
    lm = profile_lm(_config(family), Decode(batch, context))
    macs = (_linear_macs_per_token(family) + VOCAB * D) * batch
    macs += _attention_macs(batch, context + 1)
    assert lm.total("flops") * batch == pytest.approx(2 * macs, rel=0.01)


@pytest.mark.parametrize("family", DECODE_FAMILIES)
def test_decode_reads_every_weight_once_and_the_cache_it_holds(family):
    batch, context = 3, 20
    config = _config(family)
    lm = profile_lm(config, Decode(batch, context))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    expert_share = touched_experts(EXPERTS, TOP_K, batch) / EXPERTS
    weights = 0.0
    for name, p in model.named_parameters():
        if "embed_tokens" in name:
            weights += batch * D  # the gathered rows only
        elif family in MOE and p.dim() == 3:  # a stack of experts
            weights += p.numel() * expert_share
        else:
            weights += p.numel()
    assert lm.total("weight_bytes") * batch == pytest.approx(weights * BF16, rel=1e-3)
    kv_read = 2 * LAYERS * KV * HEAD_DIM * (context + 1) * BF16
    kv_written = 2 * LAYERS * KV * HEAD_DIM * BF16
    assert lm.total("kv_bytes") == pytest.approx(kv_read + kv_written, rel=1e-9)


def test_gemma2_eager_prefill_prices_every_score_it_computes():
    batch, prompt = 2, 12
    lm = profile_lm(_config("gemma2"), Prefill(batch, prompt))
    tokens = batch * prompt
    macs = _linear_macs_per_token("gemma2") * tokens + VOCAB * D * batch
    macs += _attention_macs(batch, prompt * prompt)  # eager: the full score matrix
    assert lm.total("flops") * tokens == pytest.approx(2 * macs, rel=0.01)


def test_a_sliding_window_caps_the_cache_a_decode_step_reads():
    window, context = 8, 40
    config = transformers.MistralConfig(**COMMON, sliding_window=window)
    lm = profile_lm(config, Decode(1, context))
    assert lm.total("kv_bytes") == 2 * LAYERS * KV * HEAD_DIM * (window + 1) * BF16


def test_decode_energy_per_token_falls_with_batch_and_rises_with_context():
    config = _config("llama")
    hw = "h100-sxm-datasheet"
    by_batch = [profile_lm(config, Decode(b, 64), hw).energy_j for b in (1, 4, 16)]
    by_context = [profile_lm(config, Decode(4, c), hw).energy_j for c in (16, 256, 1024)]
    assert by_batch[0] > by_batch[1] > by_batch[2]
    assert by_context[0] < by_context[1] < by_context[2]


def _step_by_step(config, prompt: int, output: int, batch: int) -> float:
    """J per output token of a request priced pass by pass: the prefill gives the first
    token, and output - 1 decode steps hold prompt, prompt + 1, ... cached tokens."""
    steps = [profile_lm(config, Decode(batch, prompt + s - 1)).energy_j * batch
             for s in range(1, output)]  # fmt: skip
    prefill = profile_lm(config, Prefill(batch, prompt)).energy_j * batch * prompt
    return (prefill + sum(steps)) / (batch * output)


def test_a_workload_costs_its_prefill_plus_output_minus_one_decode_steps():
    config = _config("qwen3")
    lm = profile_lm(config, Workload(10, 4, 2))  # a profile without time: exact
    assert lm.energy_j == pytest.approx(_step_by_step(config, 10, 4, 2), rel=1e-9)
    decode = [(p.length, p.count) for p in lm.passes if p.phase == "decode"]
    assert decode == [(11, 3.0)]  # 3 steps holding 10, 11, 12 cached tokens: 3 x the mean


def test_one_output_token_costs_exactly_one_prefill():
    config = _config("qwen3")
    one = profile_lm(config, Workload(prompt=12, output=1, batch=3), "h100-sxm-datasheet")
    prefill = profile_lm(config, Prefill(3, 12), "h100-sxm-datasheet")
    assert [p.phase for p in one.passes] == ["prefill"]
    assert one.energy_j == pytest.approx(prefill.energy_j * 12, rel=1e-12)  # J per output token


def test_a_sliding_window_request_is_priced_exactly_across_its_window():
    """Steps before the window fills grow with the context and later ones do not: the request
    is cut at the window and each run priced at its own mean, matching step-by-step pricing."""
    config = transformers.MistralConfig(**COMMON, sliding_window=8)
    lm = profile_lm(config, Workload(prompt=3, output=12, batch=1))
    assert lm.energy_j == pytest.approx(_step_by_step(config, 3, 12, 1), rel=1e-9)
    assert Workload(3, 12).decode_runs((8,)) == ((3, 7), (8, 13))


def test_layers_sum_to_the_per_token_figure_and_the_json_has_the_split():
    lm = profile_lm(_config("llama"), Decode(2, 16), "h100-sxm-datasheet")
    data = lm.to_dict()
    assert data["estimated"] is True
    layers = sum(r["energy_j"] for r in data["layers"])
    assert data["per_token"]["energy_j"] == pytest.approx(layers)
    assert data["per_token"]["seconds"] > 0
    keys = {"flops", "weight_bytes", "kv_bytes", "activation_bytes", "compute_j", "memory_j",
            "static_j"}  # fmt: skip
    assert keys <= set(data["layers"][0])
    assert data["regime"] == {"batch": 2, "context": 16, "phase": "decode",
                              "basis": "generated token"}  # fmt: skip


def test_a_real_model_is_priced_by_its_shapes_like_its_config():
    config = _config("llama")
    real = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    a = profile_lm(real, Decode(2, 16), "h100-sxm-datasheet")
    b = profile_lm(config, Decode(2, 16), "h100-sxm-datasheet")
    assert a.energy_j == pytest.approx(b.energy_j, rel=1e-9)
    assert not any(p.is_meta for p in real.parameters())  # the user's model is left alone


@pytest.mark.parametrize(
    ("experts", "top_k", "tokens", "expected"),
    [(8, 2, 1, 2.0), (8, 8, 3, 8.0), (4, 1, 2, 4 * (1 - 0.75**2))],
)
def test_touched_experts(experts, top_k, tokens, expected):
    assert touched_experts(experts, top_k, tokens) == pytest.approx(expected)


def test_workload_text_and_bad_regimes_are_one_line_errors():
    assert parse_workload("prompt=512,output=256,batch=64") == Workload(512, 256, 64)
    assert parse_workload("prompt=8,output=2").batch == 1
    for bad in ("prompt=8", "prompt=8,output=x", "prompt=8,output=2,beam=4", "8,2"):
        with pytest.raises(ConfigError):
            parse_workload(bad)
    with pytest.raises(ConfigError, match="batch"):
        Decode(0, 16)


def test_int4_weights_read_half_a_byte_per_weight_plus_their_scales():
    """Only the decoder's linear weights are quantised; each costs 4 bits and 2 bytes of bf16
    scale per group of 32, and one dequantising op as it is read (by hand, not by the code)."""
    config = _config("llama")
    dense = profile_lm(config, Decode(1, 16))
    q = profile_lm(config, Decode(1, 16), weights_dtype="int4", group_size=32)
    q_o = 2 * D * HEADS * HEAD_DIM  # q_proj + o_proj
    k_v = 2 * D * KV * HEAD_DIM
    linear = LAYERS * (q_o + k_v + 3 * D * INTER)  # 40,960 weights
    assert dense.total("weight_bytes") - q.total("weight_bytes") == pytest.approx(
        linear * BF16 - linear * (0.5 + 2 / 32), rel=1e-6
    )
    assert q.total("kv_bytes") == dense.total("kv_bytes")  # the cache is not touched
    assert q.total("compute_j") > dense.total("compute_j")  # dequantising is work
    assert q.to_dict()["serving"]["stored"] == "int4 weights (group 32)"


def test_bits_chosen_per_layer_price_each_layer_as_stored():
    """By hand: layer 0 in int8 (per channel: 1 byte + 2 bytes per in_features row scale) and
    layer 1 in int4 with groups of 32 save exactly their own layers' bytes; the rest stays."""
    config = _config("llama")
    dense = profile_lm(config, Decode(1, 16))
    layers = (("model.layers.0", "int8"), ("model.layers.1", "int4"))
    q = profile_lm(config, Decode(1, 16), layer_weights=layers, group_size=32)
    # one layer's linear weights: q, k, v, gate, up (from D), o (from the heads), down
    n = D * HEADS * HEAD_DIM + 2 * D * KV * HEAD_DIM + 2 * D * INTER + HEADS * HEAD_DIM * D
    n += INTER * D  # 28,672
    int8, int4 = n * (1 + 2 / 32), n * (0.5 + 2 / 32)  # groups of 32 for both layers
    saved = 2 * n * BF16 - int8 - int4  # 68,096 bytes
    assert dense.total("weight_bytes") - q.total("weight_bytes") == pytest.approx(saved, rel=1e-6)
    by_layer = {row.name: row.weight_bytes for row in q.layers}
    assert by_layer["model.layers.0.mlp.down_proj"] == pytest.approx(INTER * D * (1 + 2 / 32))
    assert by_layer["model.layers.1.mlp.down_proj"] == pytest.approx(INTER * D * (0.5 + 2 / 32))
    assert "model.layers.1: int4" in q.to_dict()["serving"]["stored"]
    with pytest.raises(ConfigError, match="must be stored as one of"):
        profile_lm(config, Decode(1, 16), layer_weights=(("model.layers.0", "int3"),))


def test_an_fp8_kv_cache_reads_one_byte_per_element():
    config = _config("llama")
    dense = profile_lm(config, Decode(4, 64))
    q = profile_lm(config, Decode(4, 64), kv_dtype="fp8")
    assert q.total("kv_bytes") == pytest.approx(dense.total("kv_bytes") / BF16, rel=1e-3)
    assert q.total("weight_bytes") == dense.total("weight_bytes")


def test_serving_settings_are_checked():
    with pytest.raises(ConfigError, match="--weights-dtype must be one of int8, fp8, int4"):
        profile_lm(_config("llama"), Decode(1, 8), weights_dtype="int3")
    with pytest.raises(ConfigError, match="--group-size 64 needs --weights-dtype"):
        profile_lm(_config("llama"), Decode(1, 8), group_size=64)


def test_tensor_parallel_2_shards_bytes_and_flops_and_doubles_static_power():
    """By hand: every GPU holds half the heads, inner width and vocabulary (so half the MACs),
    replicates the norms and its gathered embedding rows, and draws its own static and busy
    power (73.5 W idle + 120 W busy here) over the same wall time."""
    import dataclasses

    from energyprune.energy.hardware.profile import load_hardware

    hw = dataclasses.replace(load_hardware("h100-sxm-datasheet"), active_w=120.0)
    config, batch = _config("llama"), 4
    one = profile_lm(config, Decode(batch, 64), hw)
    two = profile_lm(config, Decode(batch, 64), hw, tensor_parallel=2)
    assert two.passes[0].profile.total.macs * 2 == one.passes[0].profile.total.macs
    # per token: the norms and the gathered embedding rows (RoPE's cos/sin are a table lookup
    # inside the fused RoPE kernel, energy/lm/graphs.py)
    replicated = ((2 * LAYERS + 1) * D * BF16 + batch * D * BF16) / batch
    assert two.total("weight_bytes") == pytest.approx(one.total("weight_bytes") + replicated)
    watts = 73.5 + 120.0  # h100-sxm-datasheet's measured idle + the busy power set above
    assert one.total("static_j") == pytest.approx(watts * one.seconds, rel=1e-9)
    assert two.total("static_j") == pytest.approx(2 * watts * two.seconds, rel=1e-9)
    assert two.power_split()["busy_j"] == pytest.approx(2 * 120.0 * two.seconds, rel=1e-9)
    comm = next(layer for layer in two.layers if layer.name == "(all-reduce)")
    # 2 all-reduces per layer; a ring of 2 sends half the hidden state from each GPU: D elements
    assert comm.activation_bytes == pytest.approx(2 * LAYERS * 2 * batch * D * BF16 / batch)
    assert "tensor parallel over 2 GPUs" in two.to_dict()["serving"]["stored"]


def test_tensor_parallel_must_divide_the_heads():
    with pytest.raises(ConfigError, match="--tensor-parallel 3 must divide the model's 8"):
        profile_lm(_config("llama"), Decode(1, 8), "h100-sxm-datasheet", tensor_parallel=3)
    with pytest.raises(ConfigError, match="declares no interconnect"):
        profile_lm(_config("llama"), Decode(1, 8), "horowitz-45nm", tensor_parallel=2)


def test_static_energy_splits_into_idle_and_busy_power(tmp_path):
    """Energy = idle power x wall time + busy (active) power x kernel time + FLOPs and bytes:
    with 73.5 W idle and 120 W busy, 120 / 193.5 of the time-driven energy is busy power."""
    import dataclasses

    from energyprune.energy.hardware.profile import load_hardware

    hw = dataclasses.replace(load_hardware("h100-sxm-datasheet"), active_w=120.0)
    lm = profile_lm(_config("llama"), Decode(2, 32), hw)
    split = lm.to_dict()["per_token"]
    assert split["busy_j"] == pytest.approx(lm.seconds * 120.0, rel=1e-9)
    assert split["idle_j"] == pytest.approx(lm.seconds * 73.5, rel=1e-9)
    parts = split["idle_j"] + split["busy_j"] + split["compute_j"] + split["memory_j"]
    assert parts + split["overhead_j"] == pytest.approx(lm.energy_j, rel=1e-9)


def test_expert_parallel_2_halves_the_experts_and_the_batch_each_gpu_holds():
    """By hand: each of 2 GPUs holds E/2 experts and serves half the requests with whole
    attention, so the MACs per token are the whole model's less half the router's; two
    all-to-alls per MoE layer send each token's hidden state to its top-k experts, half of them
    on the other GPU."""
    config, batch = _config("qwen3_moe"), 4
    one = profile_lm(config, Decode(batch, 64), "h100-sxm-datasheet")
    two = profile_lm(config, Decode(batch, 64), "h100-sxm-datasheet", expert_parallel=2)
    router = LAYERS * D * EXPERTS
    macs = lambda lm: lm.passes[0].profile.total.macs / lm.passes[0].batch  # noqa: E731
    assert two.passes[0].batch == batch // 2
    assert macs(two) == macs(one) - router / 2
    comm = next(layer for layer in two.layers if layer.name == "(all-to-all)")
    assert comm.activation_bytes == pytest.approx(2 * LAYERS * TOP_K * D * BF16 / 2)
    assert "expert parallel over 2 GPUs" in two.to_dict()["serving"]["stored"]
    with pytest.raises(ConfigError, match="has none"):
        profile_lm(_config("llama"), Decode(2, 8), "h100-sxm-datasheet", expert_parallel=2)
    with pytest.raises(ConfigError, match="must be a multiple of 2"):
        profile_lm(config, Decode(3, 8), "h100-sxm-datasheet", expert_parallel=2)
