"""Packed language-modelling blocks: framing per objective and the leading BOS of decoders."""

from __future__ import annotations

from modularevo.data.lm_batches import pack_texts
from modularevo.models._tokenizers import tiny_char_tokenizer

TEXTS = ["the quick brown fox jumps", "over the lazy dog", "pack me into blocks"] * 4


def test_causal_blocks_start_with_bos_when_the_tokenizer_adds_one():
    tok = tiny_char_tokenizer(template="bert")  # adds [CLS] (its bos) in front of a text
    blocks = pack_texts(TEXTS, tok, max_length=16, kind="causal_lm")
    assert blocks.shape[1] == 16
    assert (blocks[:, 0] == tok.bos_token_id).all()
    assert not (blocks[:, 1:] == tok.bos_token_id).any()


def test_causal_blocks_have_no_bos_when_the_tokenizer_adds_none():
    tok = tiny_char_tokenizer(template="none")
    blocks = pack_texts(TEXTS, tok, max_length=16, kind="causal_lm")
    assert blocks.shape[1] == 16
    assert not (blocks == tok.bos_token_id).any()
    # every token of the stream is used: the first block is the first 16 characters
    assert tok.decode(blocks[0]) == TEXTS[0][:16]


def test_masked_blocks_are_framed_cls_sep():
    tok = tiny_char_tokenizer(template="bert")
    blocks = pack_texts(TEXTS, tok, max_length=16, kind="masked_lm")
    assert (blocks[:, 0] == tok.cls_token_id).all()
    assert (blocks[:, -1] == tok.sep_token_id).all()
