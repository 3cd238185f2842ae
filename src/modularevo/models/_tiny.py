"""Tiny random models for tests and examples: hidden 32, 2 layers, 4 heads, vocab 128.

The Llama-family ones (``tiny-llama``, ``tiny-qwen2``, ``tiny-gemma3``) have grouped-query
attention (4 query heads over 2 key/value heads, head size 8) and a gated FFN (gate/up/
down, width 64); Qwen2 adds q/k/v biases, Gemma 3 q/k norms, a sliding-window layer and
a head tied to the embeddings (like Gemma-3-270M).

Built in memory from a fixed seed (the global RNG is left untouched), with a
character tokenizer, so tests need no network and no cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modularevo.models._tokenizers import tiny_char_tokenizer

TINY_SEED = 1234
_VOCAB = 128


def tiny_config(name: str) -> Any:
    """The HF config of a tiny model (``tiny-gptneo``, ``tiny-bert`` or ``tiny-t5``)."""
    from transformers import BertConfig, GPTNeoConfig, T5Config

    if name == "tiny-gptneo":
        return GPTNeoConfig(
            vocab_size=_VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
            attention_types=[[["global", "local"], 1]], window_size=16,
            max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        )  # fmt: skip
    if name == "tiny-bert":
        return BertConfig(
            vocab_size=_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
        )  # fmt: skip
    if name == "tiny-t5":
        config = T5Config(
            vocab_size=_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            pad_token_id=0, eos_token_id=3,
        )  # fmt: skip
        config.decoder_start_token_id = 0
        return config
    if name in LLAMA_TINY:
        return _llama_family_config(name)
    raise KeyError(name)


LLAMA_TINY = ("tiny-llama", "tiny-qwen2", "tiny-gemma3")


def _llama_family_config(name: str) -> Any:
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common: dict[str, Any] = dict(
        vocab_size=_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    if name == "tiny-llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if name == "tiny-qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    return Gemma3TextConfig(
        **common, tie_word_embeddings=True, query_pre_attn_scalar=8, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip


def tiny_tokenizer(name: str) -> Any:
    """The character tokenizer matching a tiny model's input convention."""
    template = {"tiny-bert": "bert", "tiny-t5": "eos"}.get(name, "none")
    return tiny_char_tokenizer(template=template)


def build_tiny_from(config: Any, auto_cls: Any) -> Any:
    """Instantiate ``auto_cls.from_config(config)`` under the fixed tiny seed."""
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = auto_cls.from_config(config)
    return model.eval()


def build_tiny_kind(config: Any, auto_cls: Any) -> Any:
    """A tiny model of any kind with the weights of its native form (one model, many kinds).

    The native form (masked LM for ``tiny-bert``, causal LM for ``tiny-gptneo``, seq2seq
    for ``tiny-t5``) is drawn under the fixed tiny seed; another kind (the bare encoder
    of a classifier, ...) takes its weights by name as ``from_pretrained`` would, so a
    module learned on one form fits the others. Weights only the other kind has (e.g.
    BERT's pooler) are drawn under the fixed seed too.
    """
    native = build_tiny_from(config, _native_auto_for(config))
    model = build_tiny_from(config, auto_cls)
    if type(native) is type(model):
        return native
    prefix = f"{native.base_model_prefix}."
    own = model.state_dict()
    moved = {}
    for name, tensor in native.state_dict().items():
        key = name if name in own else name.removeprefix(prefix)
        if key in own and own[key].shape == tensor.shape:
            moved[key] = tensor
    model.load_state_dict(moved, strict=False)
    return model


def _native_auto_for(config: Any) -> Any:
    name = {
        "bert": "tiny-bert", "gpt_neo": "tiny-gptneo", "t5": "tiny-t5",
        "llama": "tiny-llama", "qwen2": "tiny-qwen2", "gemma3_text": "tiny-gemma3",
    }[config.model_type]  # fmt: skip
    return _native_auto(name)


def _native_auto(name: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    if name in LLAMA_TINY:
        return AutoModelForCausalLM
    return {
        "tiny-gptneo": AutoModelForCausalLM,
        "tiny-bert": AutoModelForMaskedLM,
        "tiny-t5": AutoModelForSeq2SeqLM,
    }[name]


def save_tiny(name: str, out: Path) -> None:
    """Write a tiny model (its native kind) and tokenizer as an HF folder."""
    build_tiny_from(tiny_config(name), _native_auto(name)).save_pretrained(out)
    tiny_tokenizer(name).save_pretrained(out)


def tiny_params(name: str) -> int:
    """Parameter count of a tiny model in its native kind (tied weights once)."""
    with torch.device("meta"):
        model = _native_auto(name).from_config(tiny_config(name))
    return sum(p.numel() for p in model.parameters())
