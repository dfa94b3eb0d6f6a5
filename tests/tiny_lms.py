"""Tiny random decoder LMs and a character tokenizer, built in the test (nothing downloaded)."""

from __future__ import annotations

import torch


def tiny_llama(layers: int = 4, *, vocab: int = 64, intermediate: int = 128, seed: int = 0):
    """A random GQA Llama: hidden 64, 8 query heads of 8 sharing 2 KV heads, in eval mode."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
        pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


class CharTokenizer:
    """Characters mod 64, with the two calls our text loader and saver make."""

    def __call__(self, text, add_special_tokens=False, return_attention_mask=False):
        return {"input_ids": [ord(c) % 64 for c in text]}

    def save_pretrained(self, folder):
        (folder / "tokenizer.txt").write_text("characters mod 64\n")


def char_tokenizer():
    """A real (fast) Hugging Face tokenizer of single characters, ids below 64, built here:
    it saves and loads with AutoTokenizer like any model's."""
    import string

    import tokenizers
    import transformers

    chars = string.ascii_lowercase + string.ascii_uppercase + " .,"
    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex("."), behavior="isolated")
    tok.pre_tokenizer = split
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def saved_tiny_llama(folder, layers: int = 4):
    """A tiny GQA Llama and its tokenizer written with save_pretrained (an ``hf:DIR``)."""
    model = tiny_llama(layers)
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return model
