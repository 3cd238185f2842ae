"""Pooling functions (hand-checked) and padding-invariance of SequenceClassifier."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from modularevo.models.heads import (
    SequenceClassifier,
    last_token_pool,
    mean_pool,
    positions_from_mask,
)

torch.set_num_threads(1)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])  # (2, 3, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert mean_pool(hidden, mask).flatten().tolist() == [2.0, 4.0]


def test_last_token_pool_left_and_right_padding() -> None:
    hidden = torch.arange(6.0).view(2, 3, 1)  # values 0..5
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [0, 0, 1]])
    assert last_token_pool(hidden, right).flatten().tolist() == [1.0, 5.0]
    assert last_token_pool(hidden, left).flatten().tolist() == [2.0, 5.0]


def test_positions_from_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 2]]


def _decoder(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "gpt_neo":
        cfg = tf.GPTNeoConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                              intermediate_size=64, attention_types=[[["global", "local"], 1]],
                              window_size=4, bos_token_id=0, eos_token_id=0)  # fmt: skip
        return tf.GPTNeoModel(cfg)
    if name == "llama":
        cfg = tf.LlamaConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48,
        )  # fmt: skip
        return tf.LlamaModel(cfg)
    cfg = tf.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    return tf.GPT2Model(cfg)


@pytest.mark.parametrize("arch", ["gpt_neo", "llama", "gpt2"])
def test_decoder_classifier_same_logits_for_any_padding(arch: str) -> None:
    clf = SequenceClassifier(_decoder(arch), 3, pooling="last").eval()
    seq = torch.tensor([[5, 9, 11, 7, 3, 8]])
    alone = clf(input_ids=seq).logits
    pad = torch.zeros(1, 3, dtype=torch.long)
    ones, zeros = torch.ones(1, 6, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)
    right = clf(input_ids=torch.cat([seq, pad], 1), attention_mask=torch.cat([ones, zeros], 1))
    left = clf(input_ids=torch.cat([pad, seq], 1), attention_mask=torch.cat([zeros, ones], 1))
    torch.testing.assert_close(right.logits, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(left.logits, alone, atol=1e-5, rtol=1e-4)


def test_encoder_classifier_mean_pooling_padding_invariant_and_loss() -> None:
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64)  # fmt: skip
    clf = SequenceClassifier(tf.BertModel(cfg), 4, pooling="mean").eval()
    seq = torch.tensor([[2, 9, 11, 3]])
    alone = clf(input_ids=seq).logits
    padded = clf(input_ids=torch.tensor([[2, 9, 11, 3, 0, 0]]),
                 attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])).logits  # fmt: skip
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)
    out = clf(input_ids=seq, labels=torch.tensor([2]))
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([2]))
    assert out.loss is not None
    assert torch.isclose(out.loss, expected)


def test_bad_pooling_rejected() -> None:
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(_decoder("gpt2"), 2, pooling="max")
