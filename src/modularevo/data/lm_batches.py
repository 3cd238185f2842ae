"""Language-modelling batches from a text corpus: packed blocks, MLM masking, seq2seq halves.

Texts are tokenized once without special tokens, joined with a separator and cut
into equal blocks (no padding, so every token counts and shapes are fixed). A batch
turns blocks into model inputs for one objective:

- ``causal_lm``: labels are the inputs (the model shifts them);
- ``masked_lm``: 15% of the non-special tokens are selected; of those 80% become
  ``[MASK]``, 10% a random token, 10% stay; only selected tokens are scored;
- ``seq2seq``: the first half of a block is the source, the second half the target
  (a plain-text stand-in for the paper's code→docstring pairs).

Example:
    >>> blocks = pack_texts(["a b c", "d e"], tok, max_length=16)   # doctest: +SKIP
    >>> ids = TokenIds.of(tok)  # doctest: +SKIP
    >>> batch = lm_batch(blocks[:4], "masked_lm", ids=ids, generator=g)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError


@dataclass(frozen=True)
class TokenIds:
    """Special token ids and vocabulary size needed to build LM batches."""

    vocab_size: int
    sep: int
    cls: int | None = None
    mask: int | None = None

    @classmethod
    def of(cls, tokenizer: Any, vocab_size: int | None = None) -> TokenIds:
        """Read the ids from a Hugging Face tokenizer."""
        sep = _first_int(tokenizer, "sep_token_id", "eos_token_id", "pad_token_id")
        return cls(
            vocab_size=int(vocab_size or len(tokenizer)),
            sep=sep if sep is not None else 0,
            cls=_first_int(tokenizer, "cls_token_id", "bos_token_id"),
            mask=_first_int(tokenizer, "mask_token_id"),
        )


def _first_int(obj: Any, *names: str) -> int | None:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, int):
            return v
    return None


def pack_texts(
    texts: Sequence[str], tokenizer: Any, *, max_length: int, kind: str, chunk: int = 512
) -> Tensor:
    """Tokenize ``texts`` and pack them into blocks of ``max_length`` tokens.

    Encoder-style blocks (``masked_lm``, ``seq2seq``) are framed ``[CLS] ... [SEP]``
    when the tokenizer has those tokens. Causal blocks start with the tokenizer's
    beginning-of-sequence token when the tokenizer adds one itself (Gemma, Llama):
    those models saw it first in every pre-training sequence, and without it their
    loss on the first tokens is far above what they can do.

    Returns:
        A ``(num_blocks, max_length)`` int64 tensor.

    Raises:
        InputError: if the texts give less than one block.
    """
    ids = TokenIds.of(tokenizer)
    stream: list[int] = []
    for start in range(0, len(texts), chunk):
        enc = tokenizer(list(texts[start : start + chunk]), add_special_tokens=False)["input_ids"]
        for doc in enc:
            stream.extend(doc)
            stream.append(ids.sep)
    framed = kind != "causal_lm" and ids.cls is not None
    bos = _leading_bos(tokenizer) if kind == "causal_lm" else None
    body = max_length - 2 if framed else max_length - (bos is not None)
    n = len(stream) // body
    if n < 1:
        raise InputError(
            f"the corpus gives {len(stream)} tokens, fewer than one block of {body}; "
            "use more texts or a smaller max_length"
        )
    blocks = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    if framed:
        cls_col = torch.full((n, 1), ids.cls, dtype=torch.long)  # type: ignore[arg-type]
        sep_col = torch.full((n, 1), ids.sep, dtype=torch.long)
        blocks = torch.cat([cls_col, blocks, sep_col], dim=1)
    elif bos is not None:
        blocks = torch.cat([torch.full((n, 1), bos, dtype=torch.long), blocks], dim=1)
    return blocks  # (num_blocks, max_length)


def _leading_bos(tokenizer: Any) -> int | None:
    """The BOS id if the tokenizer puts it in front of a text by itself, else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if not isinstance(bos, int):
        return None
    try:
        first = tokenizer("a", add_special_tokens=True)["input_ids"][:1]
    except Exception:
        return None
    return bos if first == [bos] else None


def _mlm(blocks: Tensor, ids: TokenIds, generator: torch.Generator, prob: float) -> dict:
    if ids.mask is None:
        raise InputError("masked_lm needs a tokenizer with a mask token; use kind=causal_lm")
    special = (blocks == ids.sep) | (blocks == ids.cls if ids.cls is not None else False)
    rand = torch.rand(blocks.shape, generator=generator)
    selected = (rand < prob) & ~special
    labels = torch.where(selected, blocks, torch.full_like(blocks, -100))
    action = torch.rand(blocks.shape, generator=generator)
    random_tok = torch.randint(0, ids.vocab_size, blocks.shape, generator=generator)
    inputs = torch.where(selected & (action < 0.8), torch.full_like(blocks, ids.mask), blocks)
    inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tok, inputs)
    return {"input_ids": inputs, "attention_mask": torch.ones_like(blocks), "labels": labels}


def lm_batch(
    blocks: Tensor,
    kind: str,
    *,
    ids: TokenIds,
    generator: torch.Generator,
    mlm_probability: float = 0.15,
) -> dict[str, Tensor]:
    """Model inputs (with ``labels``) for one objective from packed ``blocks``.

    Args:
        blocks: ``(batch, length)`` token ids from :func:`pack_texts`.
        kind: ``causal_lm``, ``masked_lm`` or ``seq2seq``.
        ids: special token ids.
        generator: randomness of the MLM masking.
        mlm_probability: share of tokens scored by the MLM loss.
    """
    if kind == "causal_lm":
        return {"input_ids": blocks, "attention_mask": torch.ones_like(blocks), "labels": blocks}
    if kind == "masked_lm":
        return _mlm(blocks, ids, generator, mlm_probability)
    if kind == "seq2seq":
        half = blocks.shape[1] // 2
        return {
            "input_ids": blocks[:, :half].contiguous(),
            "attention_mask": torch.ones_like(blocks[:, :half]),
            "labels": blocks[:, half:].contiguous(),
        }
    raise InputError(f"unknown LM kind {kind!r}; expected causal_lm, masked_lm or seq2seq")
