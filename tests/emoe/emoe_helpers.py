"""Tiny random BERT / GPT-2 / GPT-Neo builders for the EMoE tests (offline, seeded)."""

from __future__ import annotations

import torch
import transformers as tf

torch.set_num_threads(1)

# Weights far from the 0.02 default so that the FFN matters and dropping experts shows.
_INIT = {"vocab_size": 64, "initializer_range": 0.3}


def tiny_bert(seed: int = 0) -> tf.BertModel:
    """A 2-layer BertModel (hidden 32, d_ff 64) in eval mode."""
    torch.manual_seed(seed)
    cfg = tf.BertConfig(
        **_INIT, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    return tf.BertModel(cfg).eval()


def tiny_gpt2(seed: int = 0) -> tf.GPT2LMHeadModel:
    """A 2-layer GPT-2 (Conv1D layers, hidden 32, d_ff 128) in eval mode."""
    torch.manual_seed(seed)
    cfg = tf.GPT2Config(**_INIT, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    return tf.GPT2LMHeadModel(cfg).eval()


def tiny_gptneo(seed: int = 0) -> tf.GPTNeoForCausalLM:
    """A 2-layer GPT-Neo (nn.Linear FFN, hidden 32, d_ff 64) in eval mode."""
    torch.manual_seed(seed)
    cfg = tf.GPTNeoConfig(
        **_INIT, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=32,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return tf.GPTNeoForCausalLM(cfg).eval()


BUILDERS = {"bert": tiny_bert, "gpt2": tiny_gpt2, "gpt_neo": tiny_gptneo}


def main_output(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """last_hidden_state or logits of ``model`` on ``ids``."""
    out = model(input_ids=ids)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits
