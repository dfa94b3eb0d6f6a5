"""GGUF export of Llama LMs: F16 and Q8_0 files load back in transformers' GGUF reader with the
same logits; per-layer widths go in as llama.cpp's per-layer arrays with each layer's shapes;
a BPE tokenizer round-trips; other architectures and bad --bits are one line (exit 2)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from energyprune.cli import main  # noqa: E402
from energyprune.errors import ConfigError  # noqa: E402
from energyprune.pruning.decoder import group_importance  # noqa: E402
from energyprune.pruning.gguf_export import write_gguf  # noqa: E402
from energyprune.pruning.hf_config import config_widths  # noqa: E402
from energyprune.pruning.lm_allocate import LMPlan, LMScores, apply_plan, mlp_scores  # noqa: E402
from energyprune.pruning.lm_export import load_lm, save_lm  # noqa: E402
from tests.tiny_lms import saved_tiny_llama, tiny_llama  # noqa: E402

IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))


def _rel_error(model, other) -> float:
    """max |Δ logits| / max |logits| over a few token ids."""
    with torch.no_grad():
        a, b = model(input_ids=IDS).logits, other(input_ids=IDS).logits
    return float((a - b).abs().max() / a.abs().max())


# F16 keeps 11 significant bits (relative rounding 2^-11 ≈ 5e-4 a weight, errors mostly cancel
# in the dot products): 1e-3. Q8_0 rounds each weight to 1/127 of its 32-weight block's
# largest, up to 0.4 % of it; through 2 layers of a random model we see ~0.9 %: 3 %.
@pytest.mark.parametrize(
    ("bits", "tolerance", "tied"), [(16, 1e-3, False), (16, 1e-3, True), (8, 0.03, False)]
)
def test_a_llama_loads_back_in_transformers_with_the_same_logits(tmp_path, bits, tolerance, tied):
    model = tiny_llama(2)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    summary = write_gguf(model, tmp_path / "m.gguf", bits=bits)
    assert summary.per_layer is False and summary.f16_fallback == []
    assert summary.architecture == "llama"
    names = {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert ("output.weight" in names) is not tied  # llama.cpp falls back to token_embd
    # no tokenizer metadata: transformers reads vocab_size from llama.vocab_size
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert _rel_error(model, loaded.eval()) < tolerance
    # against the model with its matrices rounded as the file stores them, only the layout can
    # differ: a Q/K row order llama.cpp does not expect is ~2 % here, above Q8_0's own noise
    assert _rel_error(_rounded(model, bits), loaded) < 1e-4


@torch.no_grad()
def _rounded(model, bits: int):
    """A copy of ``model`` with every matrix rounded to F16 or through Q8_0 and back."""
    import copy

    qtype = gguf.GGMLQuantizationType.F16 if bits == 16 else gguf.GGMLQuantizationType.Q8_0
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        if p.ndim == 2:
            back = gguf.dequantize(gguf.quantize(p.numpy(), qtype), qtype)
            p.copy_(torch.from_numpy(back.astype("float32")).reshape(p.shape))
    return twin


def _pruned(tmp_path):
    """A Llama cut per layer (MLP 96 / 128 / 112, query heads 8 / 6 / 8, layer 3 dropped),
    saved and replayed from plan.json as `export` loads it."""
    model = tiny_llama(4)
    scores = LMScores([1.0] * 4, mlp_scores(model, [IDS]), group_importance(model, [IDS]))
    apply_plan(model, LMPlan({0: 2, 2: 1}, {1: 1}, [3]), scores, round_to=16)
    save_lm(model, tmp_path / "lm")
    return load_lm(tmp_path / "lm")


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}  # fmt: skip


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    return (
        w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def test_per_layer_widths_are_arrays_and_every_tensor_fits_its_layer(tmp_path):
    model = _pruned(tmp_path)
    summary = write_gguf(model, tmp_path / "m.gguf", bits=8)
    assert summary.per_layer
    # rows that are not whole 32-weight blocks stay F16: layer 1's 6 heads of 8 (attn_output
    # rows of 48) and layer 2's MLP of 112 (ffn_down)
    assert summary.f16_fallback == ["blk.1.attn_output.weight", "blk.2.ffn_down.weight"]
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    widths = config_widths(model)
    assert widths["intermediate_size"] == [96, 128, 112]
    assert widths["num_attention_heads"] == [8, 6, 8]
    field = reader.fields
    # llama.cpp's llama loader sizes every layer from layer 0; deci sizes each from its entry
    assert summary.architecture == field["general.architecture"].contents() == "deci"
    assert field["deci.feed_forward_length"].contents() == widths["intermediate_size"]
    assert field["deci.attention.head_count"].contents() == widths["num_attention_heads"]
    assert field["deci.attention.head_count_kv"].contents() == 2  # uniform: a scalar
    assert field["deci.block_count"].contents() == 3
    assert field["deci.rope.dimension_count"].contents() == 8
    tensors = {t.name: t for t in reader.tensors}
    for i, layer in enumerate(model.model.layers):
        for name, module in layer.named_modules():
            gguf_name = _GGUF_NAMES.get(name)
            if gguf_name is not None:
                ne = [int(n) for n in tensors[f"blk.{i}.{gguf_name}.weight"].shape]
                assert ne[::-1] == list(module.weight.shape)  # ggml lists the row length first


def test_per_layer_q_and_k_are_permuted_with_their_own_head_counts(tmp_path):
    model = _pruned(tmp_path)
    write_gguf(model, tmp_path / "m.gguf", bits=16)
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    for i, layer in enumerate(model.model.layers):
        for name, proj in (("attn_q", layer.self_attn.q_proj), ("attn_k", layer.self_attn.k_proj)):
            t = tensors[f"blk.{i}.{name}.weight"]
            w = torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).copy()).float()
            w = _unpermute(w.reshape(proj.weight.shape), proj.weight.shape[0] // 8)
            assert torch.allclose(w, proj.weight, atol=1e-3)


def test_a_byte_level_bpe_tokenizer_round_trips(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )  # fmt: skip
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog 123"] * 20, trainer)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    hf.save_pretrained(tmp_path)
    summary = write_gguf(tiny_llama(1, vocab=320), tmp_path / "m.gguf", tokenizer=tmp_path)
    assert summary.tokenizer == "gpt2 BPE, 320 tokens, pre-tokenizer smollm"
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 0
    back = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    text = "the lazy fox, 42 jumps"
    assert back(text)["input_ids"] == hf(text)["input_ids"]


def _tiny_qwen3():
    config = transformers.Qwen3Config(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=8, num_key_value_heads=2, head_dim=8,
    )  # fmt: skip
    return transformers.Qwen3ForCausalLM(config).eval()


def test_other_architectures_and_bits_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="supports Llama-architecture models") as info:
        write_gguf(_tiny_qwen3(), tmp_path / "q.gguf")
    assert "\n" not in str(info.value) and not (tmp_path / "q.gguf").exists()
    with pytest.raises(ConfigError, match="--bits 5"):
        write_gguf(tiny_llama(1), tmp_path / "m.gguf", bits=5)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        write_gguf(tiny_llama(1), tmp_path / "file" / "m.gguf")


def test_cli_writes_uniform_and_per_layer_gguf(tmp_path, capsys):
    saved_tiny_llama(tmp_path / "plain", layers=2)
    out = tmp_path / "plain.gguf"
    assert (
        main(
            [
                "export",
                str(tmp_path / "plain"),
                "--format",
                "gguf",
                "--bits",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "widths uniform" in printed
    assert "21 tensors: 16 Q4_0 + 5 F32" in printed  # 2 x 7 matrices, embedding, output head
    assert "llama.cpp needs" in printed  # the character tokenizer is no byte-level BPE
    _pruned(tmp_path)
    out = tmp_path / "cut.gguf"
    assert main(["export", str(tmp_path / "lm"), "--format", "gguf", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per layer" in printed and "feed_forward_length [96, 128, 112]" in printed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--format", "gguf", "--bits", "5", "--out", "m.gguf"], "--bits 5"),
        (["--format", "gguf"], "needs --out"),
        (["--format", "gguf", "--onnx", "m.onnx", "--out", "m.gguf"], "--onnx writes ONNX"),
        (["--format", "gguf", "--out", "file/m.gguf"], "is a file"),
        (["--bits", "8", "--onnx", "m.onnx"], "--bits is for --format gguf"),
        ([], "name an output"),
    ],
)
def test_cli_refuses_bad_flags_in_one_line(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    saved_tiny_llama(tmp_path / "lm", layers=1)
    (tmp_path / "file").write_text("")
    assert main(["export", "lm", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.gguf"))


def test_cli_refuses_a_qwen3_folder_before_loading_it(tmp_path, capsys):
    _tiny_qwen3().save_pretrained(tmp_path / "qwen")
    assert (
        main(
            [
                "export",
                str(tmp_path / "qwen"),
                "--format",
                "gguf",
                "--out",
                str(tmp_path / "q.gguf"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "supports Llama-architecture models (LlamaForCausalLM) today" in err
    assert err.count("\n") == 1 and not (tmp_path / "q.gguf").exists()


def test_layers_the_plan_stored_in_fewer_bits_keep_their_own_format(tmp_path):
    """A layer stored as int4 (energy+bits) is written Q4_0 and reads back as the weights the
    run evaluated, up to Q4_0's fp16 scales (the plan rounds on Q4_0's grid); the rest take
    --bits."""
    pytest.importorskip("torchao")
    from energyprune.pruning.lm_bits import quantise_layers

    model = tiny_llama(2)
    quantise_layers(model, {0: "int4"})
    summary = write_gguf(model, tmp_path / "m.gguf", bits=16)
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    read_formats = Counter(t.tensor_type.name for t in tensors.values())
    assert summary.formats == dict(read_formats)  # what the export says it wrote, it wrote
    assert summary.formats["Q4_0"] == 7 and summary.formats["F32"] == 5  # layer 0; the norms
    assert tensors["blk.0.ffn_down.weight"].tensor_type.name == "Q4_0"
    assert tensors["blk.0.attn_output.weight"].tensor_type.name == "Q4_0"
    assert tensors["blk.1.ffn_down.weight"].tensor_type.name == "F16"
    down = tensors["blk.0.ffn_down.weight"]
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    read = torch.from_numpy(gguf.quants.dequantize(down.data, down.tensor_type)).reshape(w.shape)
    assert (read - w).abs().max() <= 1e-3 * w.abs().max()  # fp16 scales: 2^-11 relative
